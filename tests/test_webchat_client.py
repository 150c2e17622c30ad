"""The client web chat over real WebSockets: acks after deliver, errors, pushes, offline, wake."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from bots.base import ChannelConfigError, ChannelContext, Retryable
from bots.webchat import create
from relay.model import Attachment, Outgoing, Party
from tests.webchat_support import Harness, MemoryState, next_frame, start_harness, until


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    harness = await start_harness(tmp_path)
    yield harness
    await harness.close()


def out(visitor: str, **kw: object) -> Outgoing:
    base = dict(conversation="c-1", to=Party("webchat", visitor, "Vera"), text="Hello from Alice",
                message_id="m-100", origin=Party("webdesk", "alice", "Alice Adams"))
    base.update(kw)
    return Outgoing(**base)  # type: ignore[arg-type]


async def test_ack_only_after_deliver_returns(h: Harness) -> None:
    ws = await h.visitor("v1")
    h.recorder.gate = asyncio.Event()
    frame = json.dumps({"type": "message", "id": "a1", "text": "my card 4111 1111 1111 1111"})
    await ws.send_str(frame)
    await h.recorder.entered.wait()
    with pytest.raises(asyncio.TimeoutError):
        await ws.receive(timeout=0.3)
    h.recorder.gate.set()
    assert await next_frame(ws) == {"type": "ack", "id": "a1"}
    [inbound] = h.recorder.inbounds
    assert inbound.channel == "webchat"
    assert inbound.platform_id == "v1:a1"
    assert inbound.sender == Party("webchat", "v1", "Vera Visitor")
    assert inbound.chat == "v1"
    assert inbound.kind == "message"
    assert inbound.text == "my card 4111 1111 1111 1111"
    assert inbound.raw == frame.encode()


async def test_repeated_id_is_acked_again_as_duplicate(h: Harness) -> None:
    ws = await h.visitor("v2")
    for _ in range(2):
        await ws.send_json({"type": "message", "id": "same", "text": "hi"})
        assert await next_frame(ws) == {"type": "ack", "id": "same"}
    assert [r.duplicate for r in h.recorder.receipts] == [False, True]
    assert {i.platform_id for i in h.recorder.inbounds} == {"v2:same"}


@pytest.mark.parametrize("bad, fragment", [
    ("not json", "not JSON"),
    ("[1, 2]", "JSON object"),
    ('{"type": "shout", "id": "x"}', "unknown frame type"),
    ('{"type": "message", "text": "no id"}', "`id`"),
    ('{"type": "message", "id": "", "text": "x"}', "`id`"),
    ('{"type": "message", "id": "t1", "text": 5}', "`text`"),
    ('{"type": "message", "id": "t2", "text": "   "}', "empty message"),
    ('{"type": "message", "id": "t3", "text": "x", "attachments": "u1"}', "`attachments`"),
    ('{"type": "message", "id": "t4", "text": "x", "attachments": ["nope-not-an-upload"]}', "unknown upload"),
])
async def test_malformed_frame_gets_error_and_socket_stays_open(h: Harness, bad: str, fragment: str) -> None:
    ws = await h.visitor("v3")
    await ws.send_str(bad)
    reply = await next_frame(ws)
    assert reply["type"] == "error" and fragment in reply["error"], reply
    assert h.recorder.inbounds == []
    await ws.send_json({"type": "message", "id": "ok", "text": "still here"})
    assert await next_frame(ws) == {"type": "ack", "id": "ok"}


async def test_binary_frame_gets_error(h: Harness) -> None:
    ws = await h.visitor("v4")
    await ws.send_bytes(b"\x00\x01")
    reply = await next_frame(ws)
    assert reply["type"] == "error" and "binary" in reply["error"]
    assert not ws.closed


async def test_error_frame_names_the_id_it_refers_to(h: Harness) -> None:
    ws = await h.visitor("v5")
    await ws.send_json({"type": "message", "id": "e1", "text": ""})
    assert (await next_frame(ws))["id"] == "e1"


async def test_deliver_failure_is_not_acked_and_retry_succeeds(h: Harness) -> None:
    ws = await h.visitor("v6")
    h.recorder.fail = RuntimeError("journal down")
    await ws.send_json({"type": "message", "id": "r1", "text": "important"})
    assert await next_frame(ws) == {"type": "error", "id": "r1", "error": "not accepted, please retry", "retry": True}
    assert h.recorder.inbounds == []
    h.recorder.fail = None
    await ws.send_json({"type": "message", "id": "r1", "text": "important"})
    assert await next_frame(ws) == {"type": "ack", "id": "r1"}
    assert [i.platform_id for i in h.recorder.inbounds] == ["v6:r1"]


async def test_connect_wakes_the_outbox_for_that_visitor(h: Harness) -> None:
    ws = await h.visitor("v7")
    await until(lambda: ("webchat", "v7") in h.wakes)


async def test_send_pushes_to_every_socket_of_the_visitor_only(h: Harness) -> None:
    tab1, tab2, other = await h.visitor("v8"), await h.visitor("v8"), await h.visitor("v9")
    assert await h.chat.send(out("v8")) == "m-100"
    for ws in (tab1, tab2):
        assert await next_frame(ws) == {"type": "message", "id": "m-100", "text": "Hello from Alice",
                                        "from": "Alice Adams", "attachments": []}
    assert await h.chat.send(out("v8", kind="notice", message_id="n-1", text="Your message was blocked.")) == "n-1"
    assert await next_frame(tab1) == {"type": "notice", "id": "n-1", "text": "Your message was blocked."}
    await h.chat.send(out("v8", kind="edit", message_id="m-101", edits="m-100", text="Hello (edited)"))
    await next_frame(tab2)
    assert await next_frame(tab2) == {"type": "edit", "id": "m-100", "text": "Hello (edited)"}
    await h.chat.send(out("v8", kind="delete", message_id="m-102", edits="m-100", text=""))
    assert (await next_frame(tab1))["type"] == "edit"
    assert await next_frame(tab1) == {"type": "delete", "id": "m-100"}
    with pytest.raises(asyncio.TimeoutError):
        await other.receive(timeout=0.2)


async def test_send_to_offline_visitor_is_retryable(h: Harness) -> None:
    with pytest.raises(Retryable) as info:
        await h.chat.send(out("nobody"))
    assert info.value.reason == "visitor offline"
    ws = await h.visitor("v10")
    await h.chat.send(out("v10"))
    await ws.close()
    await until(lambda: h.chat.sockets.count("v10") == 0)
    with pytest.raises(Retryable):
        await h.chat.send(out("v10"))


async def test_sent_attachment_is_served_to_its_recipient_only(h: Harness) -> None:
    ws = await h.visitor("v11")
    att = Attachment.of("statement.pdf", "application/pdf", b"%PDF-1.4 statement")
    await h.chat.send(out("v11", attachments=(att,)))
    frame = await next_frame(ws)
    [meta] = frame["attachments"]
    assert meta["name"] == "statement.pdf" and meta["mime"] == "application/pdf" and meta["size"] == 18
    assert meta["url"] == f"/chat/file/{att.sha256}?visitor=v11"
    s = h.session()
    async with s.get(h.base + meta["url"]) as r:
        assert r.status == 200
        assert await r.read() == b"%PDF-1.4 statement"
        assert r.headers["Content-Type"] == "application/pdf"
        assert r.headers["Content-Disposition"].startswith("attachment;")
    async with s.get(h.base + f"/chat/file/{att.sha256}?visitor=someone-else") as r:
        assert r.status == 404


async def test_bad_visitor_id_is_refused(h: Harness) -> None:
    s = h.session()
    for query in ("", "?visitor=", "?visitor=a:b", "?visitor=" + "x" * 200):
        async with s.get(h.base + "/chat/ws" + query) as r:
            assert r.status == 400


async def test_page_and_assets_are_served_with_the_prefix(tmp_path: Path) -> None:
    h = await start_harness(tmp_path, chat_settings={"path": "/help/chat"})
    try:
        s = h.session()
        async with s.get(h.base + "/help/chat") as r:
            body = await r.text()
            assert r.status == 200 and r.content_type == "text/html"
            assert 'data-prefix="/help/chat"' in body and "/help/chat/static/chat.js" in body
            assert body.index("/help/chat/static/common.js") < body.index("/help/chat/static/chat.js")
            assert "default-src 'self'" in r.headers["Content-Security-Policy"]
        async with s.get(h.base + "/help/chat/static/chat.js") as r:
            assert r.status == 200 and "WebSocket" in await r.text()
        async with s.get(h.base + "/help/chat/static/common.js") as r:
            assert r.status == 200 and "window.RelayWeb" in await r.text()
        async with s.get(h.base + "/help/chat/static/../uploads.py") as r:
            assert r.status == 404
        async with s.get(h.base + "/chat") as r:
            assert r.status == 404
    finally:
        await h.close()


def context(app: web.Application, side: str = "client") -> ChannelContext:
    return ChannelContext(name="webchat", side=side, state=MemoryState(), app=app, data_dir="/tmp/unused",
                          max_attachment_bytes=10, wake=lambda a: None)


@pytest.mark.parametrize("settings, side, fragment", [
    ({"colour": "blue"}, "client", "unknown setting(s) colour"),
    ({}, "staff", "client-side"),
    ({"welcome": "hi"}, "client", "unknown setting(s) welcome"),
    ({"path": "chat"}, "client", "`path`"),
])
def test_create_rejects_bad_settings(tmp_path: Path, settings: dict, side: str, fragment: str) -> None:
    ctx = ChannelContext(name="webchat", side=side, state=MemoryState(), app=web.Application(),
                         data_dir=str(tmp_path), max_attachment_bytes=10, wake=lambda a: None)
    with pytest.raises(ChannelConfigError) as info:
        create("webchat", settings, ctx)
    assert fragment in str(info.value) and "webchat" in str(info.value)


def test_two_channels_on_one_path_are_refused(tmp_path: Path) -> None:
    app = web.Application()
    ctx = ChannelContext(name="a", side="client", state=MemoryState(), app=app, data_dir=str(tmp_path),
                         max_attachment_bytes=10, wake=lambda a: None)
    create("a", {}, ctx)
    with pytest.raises(ChannelConfigError, match="already used"):
        create("b", {}, ctx)
    create("c", {"path": "/chat2"}, ctx)


async def test_cross_site_websocket_is_refused(h: Harness) -> None:
    s = h.session()
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await s.ws_connect(h.ws_url("/chat/ws?visitor=v12"), headers={"Origin": "https://evil.example"})
    assert info.value.status == 403

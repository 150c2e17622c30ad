"""The employee desk over real HTTP and WebSockets: login, cookie, pushes, replies, edits."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import AsyncIterator

import aiohttp
import pytest

from bots.base import Retryable
from relay.model import Attachment, Outgoing, Party
from tests.webchat_support import Harness, next_frame, start_harness, until


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    harness = await start_harness(tmp_path)
    yield harness
    await harness.close()


def to_alice(**kw: object) -> Outgoing:
    base = dict(conversation="c-42", to=Party("webdesk", "alice", "Alice Adams"), text="card [REDACTED]",
                message_id="m-7", origin=Party("webchat", "v1", "Vera Visitor"),
                client=Party("webchat", "v1", "Vera Visitor"), action="redact", rules=("PII-001",))
    base.update(kw)
    return Outgoing(**base)  # type: ignore[arg-type]


async def test_login_sets_strict_httponly_cookie(h: Harness) -> None:
    s = h.session()
    async with s.post(h.base + "/desk/login", data={"employee": "alice", "password": "alice-secret"}) as r:
        assert r.status == 200
        assert await r.json() == {"employee": "alice", "name": "Alice Adams"}
        cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/desk" in cookie
    async with s.get(h.base + "/desk/session") as r:
        assert r.status == 200 and (await r.json())["employee"] == "alice"


@pytest.mark.parametrize("employee, password", [
    ("alice", "wrong"), ("alice", ""), ("nobody", "alice-secret"), ("", ""), ("carl", "bob-secret"),
])
async def test_bad_login_is_401_with_message_and_logged(h: Harness, caplog: pytest.LogCaptureFixture,
                                                        employee: str, password: str) -> None:
    s = h.session()
    with caplog.at_level(logging.WARNING, logger="relay.webdesk"):
        async with s.post(h.base + "/desk/login", data={"employee": employee, "password": password}) as r:
            assert r.status == 401
            assert await r.json() == {"error": "wrong employee or password"}
            assert "Set-Cookie" not in r.headers
    # a configured employee is named; whatever else was typed (maybe a password) is not logged
    named = employee if employee in ("alice", "carl") else "an unknown name"
    assert any("failed login for " + named in rec.getMessage() for rec in caplog.records)
    assert not employee or employee in ("alice", "carl") or employee not in caplog.text
    async with s.get(h.base + "/desk/session") as r:
        assert r.status == 401


async def test_websocket_without_or_with_forged_cookie_is_401(h: Harness) -> None:
    s = h.session()
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await s.ws_connect(h.ws_url("/desk/ws"))
    assert info.value.status == 401
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await s.ws_connect(h.ws_url("/desk/ws"), headers={"Cookie": "relay_desk=forged"})
    assert info.value.status == 401
    assert h.wakes == []


async def test_connect_wakes_and_pushes_reach_the_employee(h: Harness) -> None:
    s = await h.login()
    ws = await s.ws_connect(h.ws_url("/desk/ws"))
    await until(lambda: ("webdesk", "alice") in h.wakes)
    assert await h.desk.send(to_alice()) == "m-7"
    assert await next_frame(ws) == {
        "type": "message", "conversation": "c-42", "id": "m-7", "text": "card [REDACTED]",
        "from": {"name": "Vera Visitor", "channel": "webchat"},
        "client": {"name": "Vera Visitor", "channel": "webchat"},
        "verdict": {"action": "redact", "rules": ["PII-001"]}, "attachments": [],
    }
    await h.desk.send(to_alice(kind="notice", message_id="n-1", text="Conversation handed over to you."))
    assert await next_frame(ws) == {"type": "notice", "conversation": "c-42", "id": "n-1",
                                    "text": "Conversation handed over to you."}
    await h.desk.send(to_alice(kind="edit", message_id="m-8", edits="m-7", text="card, edited"))
    assert await next_frame(ws) == {"type": "edit", "conversation": "c-42", "id": "m-7", "text": "card, edited"}
    await h.desk.send(to_alice(kind="delete", message_id="m-9", edits="m-7", text=""))
    assert await next_frame(ws) == {"type": "delete", "conversation": "c-42", "id": "m-7"}


async def test_send_to_employee_without_desk_open_is_retryable(h: Harness) -> None:
    with pytest.raises(Retryable) as info:
        await h.desk.send(to_alice())
    assert info.value.reason == "employee offline"
    bob = await h.login("bob", "bob-secret")
    await bob.ws_connect(h.ws_url("/desk/ws"))
    with pytest.raises(Retryable):
        await h.desk.send(to_alice())


async def test_reply_and_edit_become_inbounds_acked_after_deliver(h: Harness) -> None:
    s = await h.login()
    ws = await s.ws_connect(h.ws_url("/desk/ws"))
    h.recorder.gate = asyncio.Event()
    await ws.send_json({"type": "reply", "conversation": "c-42", "id": "r1", "text": "Happy to help."})
    await h.recorder.entered.wait()
    with pytest.raises(asyncio.TimeoutError):
        await ws.receive(timeout=0.3)
    h.recorder.gate.set()
    assert await next_frame(ws) == {"type": "ack", "id": "r1"}
    await ws.send_json({"type": "edit", "conversation": "c-42", "id": "r2", "edits": "r1", "text": "Glad to help."})
    assert await next_frame(ws) == {"type": "ack", "id": "r2"}
    reply, edit = h.recorder.inbounds
    assert (reply.channel, reply.platform_id, reply.chat, reply.kind, reply.text) == (
        "webdesk", "alice:r1", "c-42", "message", "Happy to help.")
    assert reply.sender == Party("webdesk", "alice", "Alice Adams")
    assert reply.raw.startswith(b"{") and b"Happy to help." in reply.raw
    assert (edit.kind, edit.platform_id, edit.edits, edit.text) == ("edit", "alice:r2", "alice:r1", "Glad to help.")


async def test_reply_repeated_is_acked_and_failure_is_not(h: Harness) -> None:
    s = await h.login()
    ws = await s.ws_connect(h.ws_url("/desk/ws"))
    h.recorder.fail = OSError("disk full")
    await ws.send_json({"type": "reply", "conversation": "c-1", "id": "x", "text": "hi"})
    assert await next_frame(ws) == {"type": "error", "id": "x", "error": "not accepted, please retry", "retry": True}
    h.recorder.fail = None
    for _ in range(2):
        await ws.send_json({"type": "reply", "conversation": "c-1", "id": "x", "text": "hi"})
        assert await next_frame(ws) == {"type": "ack", "id": "x"}
    assert [r.duplicate for r in h.recorder.receipts] == [False, True]


@pytest.mark.parametrize("frame, fragment", [
    ({"type": "reply", "id": "a", "text": "no conversation"}, "`conversation`"),
    ({"type": "reply", "conversation": "c", "id": "b", "text": ""}, "empty reply"),
    ({"type": "edit", "conversation": "c", "id": "c", "text": "x"}, "`edits`"),
    ({"type": "edit", "conversation": "c", "id": "d", "edits": "a", "text": ""}, "new `text`"),
    ({"type": "message", "id": "e", "text": "desk does not take client frames"}, "unknown frame type"),
])
async def test_malformed_desk_frames_get_errors(h: Harness, frame: dict, fragment: str) -> None:
    s = await h.login()
    ws = await s.ws_connect(h.ws_url("/desk/ws"))
    await ws.send_json(frame)
    reply = await next_frame(ws)
    assert reply["type"] == "error" and fragment in reply["error"] and reply["id"] == frame["id"]
    assert h.recorder.inbounds == []
    assert not ws.closed


async def test_logout_ends_session_and_closes_desk(h: Harness) -> None:
    s = await h.login()
    ws = await s.ws_connect(h.ws_url("/desk/ws"))
    async with s.post(h.base + "/desk/logout") as r:
        assert r.status == 200
    msg = await ws.receive(timeout=5)
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
    async with s.get(h.base + "/desk/session") as r:
        assert r.status == 401
    with pytest.raises(aiohttp.WSServerHandshakeError):
        await s.ws_connect(h.ws_url("/desk/ws"))
    with pytest.raises(Retryable):
        await h.desk.send(to_alice())


async def test_desk_page_is_served(h: Harness) -> None:
    s = h.session()
    async with s.get(h.base + "/desk") as r:
        body = await r.text()
        assert r.status == 200 and 'id="login-employee"' in body and "/desk/static/desk.js" in body
        assert body.index("/desk/static/common.js") < body.index("/desk/static/desk.js")
    async with s.get(h.base + "/desk/static/desk.js") as r:
        assert r.status == 200 and r.content_type == "text/javascript"
    async with s.get(h.base + "/desk/static/common.js") as r:
        assert r.status == 200 and r.content_type == "text/javascript"


async def test_attachment_pushed_to_desk_is_downloadable_by_that_employee(h: Harness) -> None:
    s = await h.login()
    ws = await s.ws_connect(h.ws_url("/desk/ws"))
    att = Attachment.of("id-card.png", "image/png", b"\x89PNG fake image")
    await h.desk.send(to_alice(attachments=(att,)))
    [meta] = (await next_frame(ws))["attachments"]
    assert meta == {"name": "id-card.png", "mime": "image/png", "size": 15, "url": f"/desk/file/{att.sha256}"}
    async with s.get(h.base + meta["url"]) as r:
        assert r.status == 200 and await r.read() == b"\x89PNG fake image"
        assert r.headers["Content-Disposition"].startswith("inline;")
        assert "sandbox" in r.headers["Content-Security-Policy"]
    bob = await h.login("bob", "bob-secret")
    async with bob.get(h.base + meta["url"]) as r:
        assert r.status == 404


async def test_oversized_login_form_is_refused(h: Harness) -> None:
    s = h.session()
    async with s.post(h.base + "/desk/login", data={"employee": "alice", "password": "x" * 20000}) as r:
        assert r.status == 413


async def test_repeated_failures_are_throttled_per_employee_and_address(h: Harness) -> None:
    s = h.session()
    for _ in range(5):
        async with s.post(h.base + "/desk/login", data={"employee": "alice", "password": "guess"}) as r:
            assert r.status == 401
    async with s.post(h.base + "/desk/login", data={"employee": "alice", "password": "alice-secret"}) as r:
        assert r.status == 429
        assert "too many failed logins" in (await r.json())["error"] and int(r.headers["Retry-After"]) > 0
    await h.login("bob", "bob-secret")
    h.desk.throttle.window = 0.0
    await h.login("alice", "alice-secret")

"""bots.xmpp against a real Prosody, with real slixmpp clients as the employee and the client."""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import replace
import itertools
import os
from pathlib import Path
from typing import AsyncIterator, Iterator

import aiohttp
import pytest
from aiohttp import web
from slixmpp import Iq, Message

import bots.xmpp
from bots.base import Channel, Permanent, Retryable
from bots.xmpp.stanzas import NS_OOB, NS_STANZAS, el
from relay.model import Attachment, Inbound, Outgoing, Party, Receipt
from tests.prosody_support import Prosody
from tests.xmpp_support import CuttableProxy, Recorder, XmppUser, make_ctx

PASSWORD = "pw-secret"
_ids = itertools.count(1)


@pytest.fixture(scope="module")
def prosody(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prosody]:
    server = Prosody(tmp_path_factory.mktemp("prosody"))
    server.write_config()
    server.start()
    yield server
    server.stop()


def account(prosody: Prosody, stem: str) -> str:
    """A fresh account per use, so tests never see each other's rosters or offline messages."""
    return prosody.register(f"{stem}{next(_ids)}", PASSWORD)


def staff_channel(prosody: Prosody, tmp_path: Path, employees: dict[str, str], **ctx_args: object
                  ) -> bots.xmpp.XmppChannel:
    settings = {
        "network": "xmpp",
        "side": "staff",
        "mode": "component",
        "jid": prosody.component_domain,
        "secret": prosody.component_secret,
        "host": "127.0.0.1",
        "port": prosody.component_port,
        "use_tls": False,
        "reconnect_base": 0.05,
        "reconnect_max": 0.5,
        "send_timeout": 5,
    }
    return bots.xmpp.create("xmpp-staff", settings, make_ctx("xmpp-staff", "staff", str(tmp_path), employees,
                                                             **ctx_args))  # type: ignore[arg-type]


def client_channel(prosody: Prosody, tmp_path: Path, desk: str, extra: dict[str, object] | None = None,
                   **ctx_args: object) -> bots.xmpp.XmppChannel:
    settings: dict[str, object] = {
        "network": "xmpp",
        "side": "client",
        "mode": "client",
        "jid": desk,
        "password": PASSWORD,
        "host": "127.0.0.1",
        "port": prosody.c2s_port,
        "use_tls": False,
        "reconnect_base": 0.05,
        "reconnect_max": 0.5,
        **(extra or {}),
    }
    return bots.xmpp.create("xmpp-clients", settings, make_ctx("xmpp-clients", "client", str(tmp_path),
                                                               **ctx_args))  # type: ignore[arg-type]


@pytest.fixture
async def staff(prosody: Prosody, tmp_path: Path) -> AsyncIterator[tuple[bots.xmpp.XmppChannel, XmppUser, Recorder]]:
    alice = account(prosody, "alice")
    channel = staff_channel(prosody, tmp_path, {alice: "Alice Adams"})
    recorder = Recorder()
    await channel.start(recorder)
    await channel.wait_online(10)
    user = await XmppUser(alice, PASSWORD, prosody.c2s_port).connect()
    yield channel, user, recorder
    await user.stop()
    await channel.stop()


def outgoing(conv: str, to: str, text: str, mid: str, **kw: object) -> Outgoing:
    return Outgoing(conversation=conv, to=Party("xmpp-staff", to, ""), text=text, message_id=mid,
                    client=Party("webchat", "client-1", "Zoe Client"), **kw)  # type: ignore[arg-type]


async def test_create_returns_a_channel(prosody: Prosody, tmp_path: Path) -> None:
    channel = staff_channel(prosody, tmp_path, {})
    assert isinstance(channel, Channel)
    assert channel.name == "xmpp-staff"


async def test_client_message_appears_as_roster_contact_with_client_nick(staff) -> None:  # type: ignore[no-untyped-def]
    channel, alice, recorder = staff
    contact = f"c-0a1b2c@{channel.settings.jid}"
    pid = await channel.send(outgoing("c-0a1b2c", alice.jid, "Hello, I need help", "m-100"))
    assert pid == f"{contact}:relay-m-100"

    msg = await alice.wait_message(lambda m: m["body"] == "Hello, I need help")
    assert msg["from"].bare == contact
    assert msg["id"] == "relay-m-100"
    subscribe = next(p for p in alice.presences if p["type"] == "subscribe" and p["from"].bare == contact)
    assert subscribe["nick"]["nick"] == "Zoe Client"

    async def in_roster() -> str:
        while True:
            await alice.xmpp.get_roster()
            item = alice.xmpp.client_roster[contact]
            if item["subscription"] in ("from", "both"):
                return str(item["subscription"])
            await asyncio.sleep(0.05)

    assert await asyncio.wait_for(in_roster(), 10) in ("from", "both")

    info = await alice.xmpp.plugin["xep_0030"].get_info(jid=contact, timeout=5)
    assert {"urn:xmpp:receipts", "urn:xmpp:message-correct:0", "urn:xmpp:message-retract:1",
            "jabber:x:oob"} <= set(info["disco_info"]["features"])

    receipt = await recorder.wait_for(lambda i: i.kind == "event" and i.text == "receipt")
    assert receipt.reply_to == pid
    assert receipt.chat == "c-0a1b2c"
    assert receipt.sender.user == alice.jid


async def test_employee_reply_is_delivered_with_sender_and_raw(staff) -> None:  # type: ignore[no-untyped-def]
    channel, alice, recorder = staff
    contact = f"c-77aa@{channel.settings.jid}"
    await channel.send(outgoing("c-77aa", alice.jid, "Question?", "m-200"))
    await alice.wait_message(lambda m: m["body"] == "Question?")

    alice.send(contact, "Here is the answer", mid="alice-1")
    inbound = await recorder.wait_for(lambda i: i.kind == "message")
    assert inbound.chat == "c-77aa"
    assert inbound.sender == Party("xmpp-staff", alice.jid, "Alice Adams")
    assert inbound.platform_id == f"{alice.jid}:alice-1"
    assert inbound.text == "Here is the answer"
    assert b"Here is the answer" in inbound.raw and b"<message" in inbound.raw
    ack = await alice.wait_message(lambda m: m["receipt"] == "alice-1")
    assert ack["from"].bare == contact


async def test_corrections_and_retractions_both_ways(staff) -> None:  # type: ignore[no-untyped-def]
    channel, alice, recorder = staff
    contact = f"c-e1@{channel.settings.jid}"
    pid = await channel.send(outgoing("c-e1", alice.jid, "Teh rate is 5%", "m-300"))
    await alice.wait_message(lambda m: m["body"] == "Teh rate is 5%")

    await channel.send(outgoing("c-e1", alice.jid, "The rate is 5%", "m-301", kind="edit", edits=pid))
    edit = await alice.wait_message(lambda m: m["body"] == "The rate is 5%")
    assert edit["replace"]["id"] == "relay-m-300"

    await channel.send(outgoing("c-e1", alice.jid, "", "m-302", kind="delete", edits=pid))
    retract = await alice.wait_message(lambda m: m.xml.find("{urn:xmpp:message-retract:1}retract") is not None)
    assert retract["retract"]["id"] == "relay-m-300"

    alice.send(contact, "I can offer 3%", mid="a-10")
    alice.correct(contact, "a-10", "I can offer 4%", mid="a-11")
    alice.retract(contact, "a-10")
    edit_in = await recorder.wait_for(lambda i: i.kind == "edit")
    assert edit_in.text == "I can offer 4%"
    assert edit_in.edits == f"{alice.jid}:a-10"
    delete_in = await recorder.wait_for(lambda i: i.kind == "delete")
    assert delete_in.edits == f"{alice.jid}:a-10"
    assert b"urn:xmpp:message-retract:1" in delete_in.raw
    kinds = [i.kind for i in recorder.inbounds if i.kind != "event"]
    assert kinds == ["message", "edit", "delete"]


async def test_files_both_ways_through_http_file_share(staff) -> None:  # type: ignore[no-untyped-def]
    channel, alice, recorder = staff
    contact = f"c-f1@{channel.settings.jid}"
    report = os.urandom(20_000)
    att = Attachment.of("report.pdf", "application/pdf", report)
    await channel.send(outgoing("c-f1", alice.jid, "the statement", "m-400", attachments=(att,)))
    text = await alice.wait_message(lambda m: m["body"] == "the statement")
    assert text["id"] == "relay-m-400"
    file_msg = await alice.wait_message(lambda m: bool(m["oob"]["url"]))
    url = file_msg["oob"]["url"]
    assert file_msg["body"] == url
    async with aiohttp.ClientSession() as http:
        async with http.get(url) as resp:
            assert resp.status == 200
            assert await resp.read() == report

    photo = os.urandom(5_000)
    photo_url = await alice.upload("scan.png", photo, "image/png")
    oob = el(NS_OOB, "x")
    oob.append(el(NS_OOB, "url", photo_url))
    alice.send(contact, photo_url, mid="a-f1", extra=[oob])
    inbound = await recorder.wait_for(lambda i: i.kind == "message" and bool(i.attachments))
    (got,) = inbound.attachments
    assert got.data == photo
    assert got.sha256 == hashlib.sha256(photo).hexdigest()
    assert got.name == "scan.png" and got.mime == "image/png" and got.refused == ""
    assert inbound.text == ""


@pytest.fixture
async def internal_server() -> AsyncIterator[tuple[str, dict[str, int]]]:
    """A second HTTP server on 127.0.0.1 standing for an internal service (SSRF target)."""
    hits = {"count": 0}

    async def secret(request: web.Request) -> web.Response:
        hits["count"] += 1
        return web.Response(body=b"internal secret", content_type="text/plain")

    app = web.Application()
    app.router.add_get("/{name}", secret)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}", hits
    await runner.cleanup()


def oob_of(url: str) -> list:  # type: ignore[type-arg]
    node = el(NS_OOB, "x")
    node.append(el(NS_OOB, "url", url))
    return [node]


async def test_inbound_url_outside_the_upload_host_is_refused_not_fetched(
        staff, internal_server: tuple[str, dict[str, int]], prosody: Prosody) -> None:  # type: ignore[no-untyped-def]
    channel, alice, recorder = staff
    base, hits = internal_server
    contact = f"c-ssrf@{channel.settings.jid}"
    alice.send(contact, "see the report", mid="a-ssrf", extra=oob_of(f"{base}/admin.txt"))
    inbound = await recorder.wait_for(lambda i: i.platform_id.endswith(":a-ssrf"))
    assert inbound.kind == "message" and inbound.text == "see the report"
    (att,) = inbound.attachments
    internal_host = base.removeprefix("http://")
    assert att.refused == f"host not allowed: {internal_host}"
    assert att.data == b"" and att.platform_ref == f"{base}/admin.txt" and att.name == "admin.txt"
    assert hits["count"] == 0
    await alice.wait_message(lambda m: m["receipt"] == "a-ssrf")

    photo = os.urandom(3_000)
    url = await alice.upload("ok.png", photo, "image/png")
    alice.send(contact, url, mid="a-ok", extra=oob_of(url))
    ok = await recorder.wait_for(lambda i: i.platform_id.endswith(":a-ok"))
    assert ok.attachments[0].refused == "" and ok.attachments[0].data == photo
    assert hits["count"] == 0


async def test_fetch_hosts_setting_replaces_the_default(
        prosody: Prosody, tmp_path: Path, internal_server: tuple[str, dict[str, int]]) -> None:
    base, hits = internal_server
    desk = account(prosody, "desk")
    channel = client_channel(prosody, tmp_path, desk, extra={"fetch_hosts": [base.removeprefix("http://")]})
    recorder = Recorder()
    await channel.start(recorder)
    zoe = await XmppUser(account(prosody, "zoe"), PASSWORD, prosody.c2s_port).connect()
    try:
        await channel.wait_online(10)
        zoe.send(desk, f"{base}/doc.txt", mid="z-in", extra=oob_of(f"{base}/doc.txt"))
        allowed = await recorder.wait_for(lambda i: i.platform_id.endswith(":z-in"))
        assert allowed.attachments[0].data == b"internal secret" and hits["count"] == 1
        url = await zoe.upload("id.jpg", b"jpeg bytes", "image/jpeg")
        zoe.send(desk, url, mid="z-up", extra=oob_of(url))
        refused = await recorder.wait_for(lambda i: i.platform_id.endswith(":z-up"))
        assert refused.attachments[0].refused == f"host not allowed: 127.0.0.1:{prosody.http_port}"
    finally:
        await zoe.stop()
        await channel.stop()


async def test_inbound_file_over_the_limit_is_refused_not_fetched(prosody: Prosody, tmp_path: Path) -> None:
    alice = account(prosody, "alice")
    channel = staff_channel(prosody, tmp_path, {alice: "Alice"}, max_attachment_bytes=4096)
    recorder = Recorder()
    await channel.start(recorder)
    user = await XmppUser(alice, PASSWORD, prosody.c2s_port).connect()
    try:
        await channel.wait_online(10)
        contact = f"c-big@{channel.settings.jid}"
        small, big = os.urandom(1000), os.urandom(50_000)
        for name, data in (("small.bin", small), ("big.bin", big)):
            url = await user.upload(name, data)
            oob = el(NS_OOB, "x")
            oob.append(el(NS_OOB, "url", url))
            user.send(contact, url, mid=f"file-{name}", extra=[oob])
        await recorder.wait_for(lambda i: i.platform_id.endswith("file-big.bin"))
        by_name = {i.attachments[0].name: i.attachments[0] for i in recorder.inbounds if i.attachments}
        assert by_name["small.bin"].data == small and by_name["small.bin"].refused == ""
        assert by_name["big.bin"].data == b""
        assert "too large" in by_name["big.bin"].refused
        assert by_name["big.bin"].size == 50_000
    finally:
        await user.stop()
        await channel.stop()


async def test_stranger_is_delivered_then_refused_with_stanza_error(staff, prosody: Prosody) -> None:  # type: ignore[no-untyped-def]
    channel, alice, recorder = staff
    stranger = await XmppUser(account(prosody, "mallory"), PASSWORD, prosody.c2s_port).connect()
    try:
        contact = f"c-s1@{channel.settings.jid}"
        stranger.send(contact, "let me in", mid="mal-1")
        inbound = await recorder.wait_for(lambda i: i.sender.user == stranger.jid)
        assert inbound.kind == "message" and inbound.chat == "c-s1"
        message_id = recorder.seen[("xmpp-staff", inbound.platform_id)]
        notice = Outgoing(conversation="c-s1", to=Party("xmpp-staff", stranger.jid, ""), kind="notice",
                          text="You are not an employee of this desk.", message_id=message_id)
        await channel.send(notice)
        err = await stranger.wait_message(lambda m: m["type"] == "error")
        assert err["id"] == "mal-1"
        assert err["from"].bare == contact
        assert err.xml.find(f".//{{{NS_STANZAS}}}forbidden") is not None
        assert err["error"]["text"] == "You are not an employee of this desk."
        assert not alice.bodies_from(contact)

        stranger.send(channel.settings.jid, "hello component", mid="mal-2")
        bare = await recorder.wait_for(lambda i: i.platform_id == f"{stranger.jid}:mal-2")
        assert bare.chat == "" and bare.kind == "message"
        await channel.send(Outgoing(conversation="", to=Party("xmpp-staff", stranger.jid, ""), kind="notice",
                                    text="Write to a conversation contact.",
                                    message_id=recorder.seen[("xmpp-staff", bare.platform_id)]))
        err2 = await stranger.wait_message(lambda m: m["type"] == "error" and m["id"] == "mal-2")
        assert err2["from"].full == channel.settings.jid
    finally:
        await stranger.stop()


async def test_client_account_side_both_ways(prosody: Prosody, tmp_path: Path) -> None:
    desk = account(prosody, "desk")
    channel = client_channel(prosody, tmp_path, desk)
    recorder = Recorder()
    await channel.start(recorder)
    zoe = await XmppUser(account(prosody, "zoe"), PASSWORD, prosody.c2s_port).connect()
    try:
        await channel.wait_online(10)
        nick = el("http://jabber.org/protocol/nick", "nick", "Zoe Z")
        zoe.send(desk, "Hi, is my transfer done?", mid="z-1", extra=[nick])
        inbound = await recorder.wait_for(lambda i: i.kind == "message")
        assert inbound.chat == zoe.jid
        assert inbound.sender == Party("xmpp-clients", zoe.jid, "Zoe Z")
        assert inbound.platform_id == f"{zoe.jid}:z-1"
        await zoe.wait_message(lambda m: m["receipt"] == "z-1")

        to = Party("xmpp-clients", zoe.jid, "Zoe Z")
        reply = Outgoing(conversation="c-x", to=to, message_id="m-500",
                         text="This conversation is recorded.\nYes, it went out today.")
        pid = await channel.send(reply)
        assert pid == f"{desk}:relay-m-500"
        got = await zoe.wait_message(lambda m: m["id"] == "relay-m-500")
        assert got["body"].startswith("This conversation is recorded.")
        await recorder.wait_for(lambda i: i.kind == "event" and i.reply_to == pid)

        await channel.send(Outgoing(conversation="c-x", to=to, message_id="m-501", kind="edit", edits=pid,
                                    text="This conversation is recorded.\nYes, it went out this morning."))
        edit = await zoe.wait_message(lambda m: m["replace"]["id"] == "relay-m-500")
        assert edit["body"].endswith("this morning.")
        await channel.send(Outgoing(conversation="c-x", to=to, message_id="m-502", kind="delete", edits=pid,
                                    text=""))
        retract = await zoe.wait_message(lambda m: m["retract"]["id"] == "relay-m-500")
        assert retract["from"].bare == desk

        zoe.correct(desk, "z-1", "Hi, is my wire transfer done?", mid="z-2")
        zoe.retract(desk, "z-1")
        assert (await recorder.wait_for(lambda i: i.kind == "edit")).edits == f"{zoe.jid}:z-1"
        assert (await recorder.wait_for(lambda i: i.kind == "delete")).edits == f"{zoe.jid}:z-1"

        receipt_pdf = os.urandom(3000)
        await channel.send(Outgoing(conversation="c-x", to=to, message_id="m-503", text="",
                                    attachments=(Attachment.of("receipt.pdf", "application/pdf", receipt_pdf),)))
        file_msg = await zoe.wait_message(lambda m: m["id"] == "relay-m-503")
        async with aiohttp.ClientSession() as http:
            async with http.get(file_msg["oob"]["url"]) as resp:
                assert await resp.read() == receipt_pdf

        scan = os.urandom(2000)
        url = await zoe.upload("id.jpg", scan, "image/jpeg")
        oob = el(NS_OOB, "x")
        oob.append(el(NS_OOB, "url", url))
        zoe.send(desk, url, mid="z-3", extra=[oob])
        with_file = await recorder.wait_for(lambda i: bool(i.attachments))
        assert with_file.attachments[0].data == scan
    finally:
        await zoe.stop()
        await channel.stop()


async def test_send_while_disconnected_is_retryable(prosody: Prosody, tmp_path: Path) -> None:
    channel = staff_channel(prosody, tmp_path, {})
    with pytest.raises(Retryable, match="xmpp disconnected"):
        await channel.send(outgoing("c-1", "alice@relay.test", "x", "m-1"))


async def test_bad_conversation_id_is_permanent(staff) -> None:  # type: ignore[no-untyped-def]
    channel, alice, _ = staff
    with pytest.raises(Permanent, match="cannot be a JID"):
        await channel.send(outgoing("bad conv@x", alice.jid, "x", "m-1"))


async def test_outage_messages_delivered_in_order_once(staff, prosody: Prosody) -> None:  # type: ignore[no-untyped-def]
    """Prosody stops while the relay is sending; all arrive after the restart, in order, once."""
    channel, alice, recorder = staff
    contact = f"c-out@{channel.settings.jid}"
    texts = [f"message {n:02d}" for n in range(30)]
    retries = 0
    stopped = asyncio.Event()

    async def outbox() -> None:
        nonlocal retries
        for n, text in enumerate(texts):
            if n == 10:
                await stopped.wait()
            while True:
                try:
                    await channel.send(outgoing("c-out", alice.jid, text, f"m-out-{n}"))
                    break
                except Retryable:
                    retries += 1
                    await asyncio.sleep(0.05)

    sender = asyncio.create_task(outbox())
    await alice.wait_message(lambda m: m["body"] == "message 09")
    await asyncio.to_thread(prosody.stop)
    stopped.set()
    await asyncio.sleep(0.5)
    await asyncio.to_thread(prosody.start)
    await asyncio.wait_for(sender, 30)
    await alice.wait_message(lambda m: m["body"] == "message 29", timeout=20)
    await asyncio.sleep(0.3)
    # alice's client uses stream management: Prosody re-delivers what she had not acknowledged
    # when it stopped, with the same stanza id, which a client shows once
    assert alice.distinct_bodies_from(contact) == texts
    assert retries > 0
    assert channel.link.connections >= 2
    assert alice.sessions >= 2


async def test_control_characters_do_not_break_the_stream(staff) -> None:  # type: ignore[no-untyped-def]
    channel, alice, _ = staff
    await channel.send(outgoing("c-ctl", alice.jid, "ding\x07dong", "m-ctl-1"))
    await channel.send(outgoing("c-ctl", alice.jid, "after", "m-ctl-2"))
    got = await alice.wait_message(lambda m: m["body"] == "after")
    assert got["from"].bare == f"c-ctl@{channel.settings.jid}"
    assert [m["body"] for m in alice.messages if m["id"] == "relay-m-ctl-1"] == ["ding\ufffddong"]
    assert channel.link.connections == 1


async def test_hub_failure_is_answered_with_an_error_and_no_receipt(prosody: Prosody, tmp_path: Path) -> None:
    alice = account(prosody, "alice")
    channel = staff_channel(prosody, tmp_path, {alice: "Alice"})

    async def broken(inbound: Inbound) -> Receipt:
        raise RuntimeError("journal unavailable")

    await channel.start(broken)
    user = await XmppUser(alice, PASSWORD, prosody.c2s_port).connect()
    try:
        await channel.wait_online(10)
        contact = f"c-broken@{channel.settings.jid}"
        user.send(contact, "are you there?", mid="b-1")
        err = await user.wait_message(lambda m: m["type"] == "error" and m["id"] == "b-1")
        assert err["error"]["condition"] == "internal-server-error"
        assert err["error"]["type"] == "wait"
        assert not [m for m in user.messages if m["receipt"] == "b-1"]
    finally:
        await user.stop()
        await channel.stop()


async def test_client_account_resends_nothing_the_server_took_before_the_line_died(
        prosody: Prosody, tmp_path: Path) -> None:
    """The server takes a message, its answers are lost, the connection dies: the send reports
    Retryable, and the outbox's retry after the reconnect must not deliver the message twice
    (stream management's resume count says the server had it)."""
    desk = account(prosody, "desk")
    proxy = await CuttableProxy(prosody.c2s_port).start()
    channel = client_channel(prosody, tmp_path, desk, extra={"port": proxy.port, "send_timeout": 30})
    recorder = Recorder()
    await channel.start(recorder)
    zoe = await XmppUser(account(prosody, "zoe"), PASSWORD, prosody.c2s_port).connect()
    try:
        await channel.wait_online(10)
        to = Party("xmpp-clients", zoe.jid, "Zoe")
        first = Outgoing(conversation="c-sm", to=to, message_id="m-sm-1", text="before the cut")
        await channel.send(first)
        await zoe.wait_message(lambda m: m["id"] == "relay-m-sm-1")
        proxy.hold_replies()
        out = Outgoing(conversation="c-sm", to=to, message_id="m-sm-2", text="taken, answer lost")
        sending = asyncio.create_task(channel.send(out))
        await zoe.wait_message(lambda m: m["id"] == "relay-m-sm-2")
        assert not sending.done()
        proxy.cut()
        with pytest.raises(Retryable):
            await sending
        await channel.wait_online(10)
        assert channel.link.connections == 2
        assert channel.link.taken("relay-m-sm-2") and not channel.link.taken("relay-m-sm-3")
        assert await channel.send(out) == f"{desk}:relay-m-sm-2"
        after = Outgoing(conversation="c-sm", to=to, message_id="m-sm-3", text="after the cut")
        await channel.send(after)
        await zoe.wait_message(lambda m: m["id"] == "relay-m-sm-3")
        ids = [m["id"] for m in zoe.messages if m["body"]]
        assert ids == ["relay-m-sm-1", "relay-m-sm-2", "relay-m-sm-3"]
    finally:
        await zoe.stop()
        await channel.stop()
        await proxy.stop()


async def test_client_account_acknowledges_only_what_the_hub_journaled(prosody: Prosody, tmp_path: Path) -> None:
    """Stream management counts an incoming message as handled only once `deliver` returned.
    The line dies while one message is still being journaled: on resumption the server sends
    that one again (the hub would deduplicate it), and not the one already journaled. A relay
    that dies there has not acknowledged it either, so the server keeps it: nothing is lost."""
    desk = account(prosody, "desk")
    proxy = await CuttableProxy(prosody.c2s_port).start()
    channel = client_channel(prosody, tmp_path, desk, extra={"port": proxy.port})
    recorder = Recorder()
    gate = asyncio.Event()
    calls: list[str] = []

    async def deliver(inbound: Inbound) -> Receipt:
        calls.append(inbound.text)
        if inbound.text == "slow to journal":
            await gate.wait()
        return await recorder(inbound)

    await channel.start(deliver)
    zoe = await XmppUser(account(prosody, "zoe"), PASSWORD, prosody.c2s_port).connect()
    try:
        await channel.wait_online(10)
        zoe.send(desk, "journaled", mid="z-1")
        await recorder.wait_for(lambda i: i.text == "journaled")
        zoe.send(desk, "slow to journal", mid="z-2")
        for _ in range(200):
            if "slow to journal" in calls:
                break
            await asyncio.sleep(0.02)
        assert calls == ["journaled", "slow to journal"]
        proxy.cut()
        for _ in range(250):
            if channel.link.connections == 2:
                break
            await asyncio.sleep(0.02)
        assert channel.link.connections == 2
        zoe.send(desk, "after the cut", mid="z-3")  # queued behind the re-sent one
        await asyncio.sleep(0.3)
        gate.set()
        await recorder.wait_for(lambda i: i.text == "after the cut")
        assert calls == ["journaled", "slow to journal", "slow to journal", "after the cut"]
        assert [i.text for i in recorder.inbounds] == ["journaled", "slow to journal", "after the cut"]
    finally:
        gate.set()
        await zoe.stop()
        await channel.stop()
        await proxy.stop()


async def test_one_barrier_ping_in_flight_covers_the_sends_made_meanwhile(staff) -> None:  # type: ignore[no-untyped-def]
    """Sends spread over many loop steps share barrier pings: at most one is in flight, and
    every send still returns only after a ping sent after it came back."""
    channel, alice, _ = staff
    xmpp = channel.link.current()
    outstanding: set[str] = set()
    most = 0
    pings = 0

    def out(stanza: object) -> object:
        nonlocal most, pings
        if isinstance(stanza, Iq) and stanza.xml.find("{urn:xmpp:ping}ping") is not None:
            outstanding.add(stanza["id"])
            pings += 1
            most = max(most, len(outstanding))
        return stanza

    def incoming(stanza: object) -> object:
        if isinstance(stanza, Iq):
            outstanding.discard(stanza["id"])
        return stanza

    xmpp.add_filter("out", out)
    xmpp.add_filter("in", incoming)
    sends = []
    for i in range(30):
        sends.append(asyncio.create_task(channel.send(outgoing(f"conv-ping{i % 3}", alice.jid, f"n{i}", f"m-ping{i}"))))
        await asyncio.sleep(0)
    ids = await asyncio.gather(*sends)
    assert len(set(ids)) == 30
    assert most == 1
    assert 1 <= pings < 30
    await alice.wait_message(lambda m: m["body"] == "n29")
    got = [m["body"] for m in alice.messages if (m["body"] or "").startswith("n")]
    assert sorted(got, key=lambda b: int(b[1:])) == [f"n{i}" for i in range(30)]


async def test_stanzas_sent_in_one_loop_step_leave_in_one_write(staff) -> None:  # type: ignore[no-untyped-def]
    """Writes are batched per event-loop step, in order, without changing a byte."""
    channel, alice, _ = staff
    xmpp = channel.link.current()
    writes: list[bytes] = []
    real_write = xmpp.transport.write

    def write(data: bytes) -> None:
        writes.append(bytes(data))
        real_write(data)

    xmpp.transport.write = write
    try:
        await asyncio.gather(*(channel.send(outgoing("conv-batch", alice.jid, f"b{i}", f"m-batch{i}")) for i in range(5)))
    finally:
        xmpp.transport.write = real_write
    together = [w for w in writes if b"relay-m-batch0" in w]
    assert len(together) == 1
    order = [together[0].index(f"relay-m-batch{i}\"".encode()) for i in range(5)]
    assert order == sorted(order)
    await alice.wait_message(lambda m: m["body"] == "b4")


async def test_a_killed_client_account_resumes_its_stream_and_gets_what_it_had_not_journaled(
        prosody: Prosody, tmp_path: Path) -> None:
    """The relay dies (no closing handshake) while a message is still being journaled. The next
    relay process, with the same stored state, resumes the stream-management session: the
    server sends the unjournaled message again, and not the one already journaled."""
    desk = account(prosody, "desk")
    proxy = await CuttableProxy(prosody.c2s_port).start()
    first = client_channel(prosody, tmp_path, desk, extra={"port": proxy.port, "reconnect_base": 30,
                                                           "reconnect_max": 30})
    state = first.ctx.state
    gate = asyncio.Event()
    before = Recorder()

    async def stuck(inbound: Inbound) -> Receipt:
        if inbound.text == "in flight when killed":
            await gate.wait()
        return await before(inbound)

    await first.start(stuck)
    zoe = await XmppUser(account(prosody, "zoe"), PASSWORD, prosody.c2s_port).connect()
    second: bots.xmpp.XmppChannel | None = None
    try:
        await first.wait_online(10)
        zoe.send(desk, "journaled", mid="k-1")
        await before.wait_for(lambda i: i.text == "journaled")
        zoe.send(desk, "in flight when killed", mid="k-2")
        for _ in range(250):
            saved = await state.get("sm_session")
            if saved and json.loads(saved)["h"] >= 1 and first._queues:
                break
            await asyncio.sleep(0.02)
        assert saved and first._queues
        await proxy.stop()  # the process is gone: no </stream>, no reconnect (30 s backoff)
        second = client_channel(prosody, tmp_path, desk)
        second.ctx = replace(second.ctx, state=state)
        after = Recorder()
        await second.start(after)
        await second.wait_online(15)
        got = await after.wait_for(lambda i: i.text == "in flight when killed", timeout=15)
        assert got.platform_id.endswith(":k-2")
        zoe.send(desk, "after the restart", mid="k-3")
        await after.wait_for(lambda i: i.text == "after the restart")
        assert [i.text for i in after.inbounds] == ["in flight when killed", "after the restart"]
    finally:
        gate.set()
        await zoe.stop()
        if second is not None:
            await second.stop()
        await first.stop()

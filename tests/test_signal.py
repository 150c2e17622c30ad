"""The Signal adapter against a fake signal-cli JSON-RPC daemon on loopback: messages,
attachments within the limit, edits, remote deletes, reactions, receipts, sending, and a
daemon restart mid-stream resumed without loss."""

from __future__ import annotations

import asyncio
import time
from typing import AsyncIterator, Callable

import pytest

from bots.base import ChannelConfigError, Permanent, Retryable
from bots.signal.channel import SignalChannel, create
from relay.model import Attachment, Outgoing, Party
from tests.fake_signal import FakeSignalCli
from tests.webhook_support import Host, Recorder

CLIENT = "+4915112345678"


class Rig:
    def __init__(self, cli: FakeSignalCli, channel: SignalChannel, hub: Recorder) -> None:
        self.cli, self.channel, self.hub = cli, channel, hub

    async def until(self, pred: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not pred():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; journal: {[i.platform_id for i in self.hub.journal]}")
            await asyncio.sleep(0.01)


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    cli = FakeSignalCli()
    await cli.start()
    host = Host(max_attachment_bytes=1000)
    channel = create("signal", {"account": cli.account, "port": cli.port, "timeout": 1, "max_backoff": 0.2},
                     host.ctx("signal"))
    assert isinstance(channel, SignalChannel)
    hub = Recorder()
    await channel.start(hub)
    r = Rig(cli, channel, hub)
    await r.until(lambda: cli.subscriptions == 1, "the subscription")
    yield r
    await channel.stop()
    await cli.stop()


def out(text: str, message_id: str = "m-1", **kw: object) -> Outgoing:
    return Outgoing(conversation="c-1", to=Party("signal", CLIENT), text=text, message_id=message_id, **kw)  # type: ignore[arg-type]


def test_config_errors_name_the_setting() -> None:
    host = Host()
    with pytest.raises(ChannelConfigError, match="E.164"):
        create("signal", {"account": "15550001111"}, host.ctx("signal"))
    with pytest.raises(ChannelConfigError, match="port"):
        create("signal", {"account": "+15550001111", "port": "x"}, host.ctx("signal"))
    with pytest.raises(ChannelConfigError, match="client-side"):
        create("signal", {"account": "+15550001111"}, host.ctx("signal", side="staff"))


async def test_messages_edits_deletes_reactions_and_receipts(rig: Rig) -> None:
    hello = rig.cli.text(CLIENT, "Hallo, ich habe eine Frage")
    await rig.cli.push(hello)
    ts = hello["timestamp"]
    await rig.cli.push(rig.cli.edit(CLIENT, ts, "Hallo, ich habe zwei Fragen"))
    await rig.cli.push(rig.cli.reaction(CLIENT, "👍", rig.cli.account, 1700000000000))
    await rig.cli.push(rig.cli.remote_delete(CLIENT, ts))
    await rig.cli.push(rig.cli.receipt(CLIENT, [1700000000000, 1700000000001]))
    await rig.cli.push(rig.cli.receipt(CLIENT, [1700000000000], kind="READ"))
    await rig.cli.push(rig.cli.envelope(CLIENT, typingMessage={"action": "STARTED"}))
    await rig.until(lambda: len(rig.hub.journal) == 8, "eight items")
    msg, edit, reaction, delete, r1, r2, read, typing = rig.hub.journal
    assert (msg.kind, msg.text, msg.chat, msg.sender.display) == ("message", "Hallo, ich habe eine Frage", CLIENT, "Client")
    assert msg.platform_id == f"{CLIENT}:{ts}" and b"Hallo" in msg.raw
    assert (edit.kind, edit.text, edit.edits) == ("edit", "Hallo, ich habe zwei Fragen", msg.platform_id)
    assert (reaction.kind, reaction.text, reaction.reply_to) == ("reaction", "👍", f"{rig.cli.account}:1700000000000")
    assert (delete.kind, delete.edits) == ("delete", msg.platform_id)
    assert [(r.kind, r.text, r.reply_to) for r in (r1, r2, read)] == [
        ("event", "receipt", f"{rig.cli.account}:1700000000000"), ("event", "receipt", f"{rig.cli.account}:1700000000001"),
        ("event", "marker:displayed", f"{rig.cli.account}:1700000000000")]
    assert typing.kind == "event" and "typingMessage" in typing.text


async def test_attachments_within_the_limit_are_fetched_and_over_it_refused_unfetched(rig: Rig) -> None:
    small = rig.cli.add_attachment(b"\xff\xd8" + b"j" * 400, "image/jpeg", "foto.jpg")
    big = rig.cli.add_attachment(b"v" * 3000, "video/mp4", None)
    await rig.cli.push(rig.cli.text(CLIENT, "", attachments=[small, big]))
    await rig.until(lambda: len(rig.hub.journal) == 1, "the message")
    a, b = rig.hub.journal[0].attachments
    assert a.data == b"\xff\xd8" + b"j" * 400 and a.name == "foto.jpg" and a.mime == "image/jpeg"
    assert b.data == b"" and "not fetched" in b.refused and b.size == 3000
    assert rig.cli.fetched == [small["id"]]


async def test_sending_text_files_edits_quotes_and_deletes(rig: Rig) -> None:
    doc = Attachment.of("Vertrag.pdf", "application/pdf", b"%PDF-1.7 contract")
    first = await rig.channel.send(out("Hier ist der Vertrag", attachments=(doc,), reply_to=f"{CLIENT}:1700000000123"))
    sent = rig.cli.sent[0]
    assert first == f"{rig.cli.account}:{sent['_timestamp']}" and sent["recipient"] == [CLIENT]
    assert sent["message"] == "Hier ist der Vertrag" and sent["_files"] == [("application/pdf", "Vertrag.pdf", doc.data)]
    assert (sent["quoteTimestamp"], sent["quoteAuthor"]) == (1700000000123, CLIENT)
    await rig.channel.send(out("Hier ist der neue Vertrag", message_id="m-2", kind="edit", edits=first))
    assert rig.cli.sent[1]["editTimestamp"] == sent["_timestamp"] and rig.cli.sent[1]["message"] == "Hier ist der neue Vertrag"
    await rig.channel.send(out("", message_id="m-3", kind="delete", edits=first))
    assert rig.cli.deleted[0]["targetTimestamp"] == sent["_timestamp"]


async def test_send_failures_are_mapped(rig: Rig) -> None:
    rig.cli.unregistered.add(CLIENT)
    with pytest.raises(Permanent, match="not on Signal"):
        await rig.channel.send(out("hi"))
    rig.cli.unregistered.clear()
    rig.cli.rate_limited = 1
    with pytest.raises(Retryable) as info:
        await rig.channel.send(out("hi"))
    assert info.value.after == 60.0 and "rate" in info.value.reason.lower()
    assert await rig.channel.send(out("hi"))


async def test_daemon_restart_mid_stream_resumes_without_loss(rig: Rig) -> None:
    for i in range(50):
        await rig.cli.push(rig.cli.text(CLIENT, f"msg {i:03d}"))
    await rig.until(lambda: len(rig.hub.journal) == 50, "the first half")
    await rig.cli.stop()
    with pytest.raises(Retryable):
        await rig.channel.send(out("while down"))
    for i in range(50, 100):
        await rig.cli.push(rig.cli.text(CLIENT, f"msg {i:03d}"))  # kept by the daemon: nobody subscribed
    await rig.cli.restart()
    await rig.until(lambda: len(rig.hub.journal) == 100, "the second half after the restart")
    assert [i.text for i in rig.hub.journal] == [f"msg {i:03d}" for i in range(100)]
    assert rig.cli.subscriptions == 2 and rig.channel.reconnects >= 1
    assert await rig.channel.send(out("back"))


async def test_journal_failure_is_retried_not_skipped(rig: Rig) -> None:
    rig.hub.fail_next = 2
    await rig.cli.push(rig.cli.text(CLIENT, "eventually"))
    await rig.until(lambda: len(rig.hub.journal) == 1, "the retried delivery")
    assert rig.hub.journal[0].text == "eventually" and rig.hub.calls == 3


async def test_each_clients_messages_keep_their_order_while_clients_go_side_by_side(rig: Rig) -> None:
    clients = [f"+4915100000{c:03d}" for c in range(3)]
    for i in range(20):
        for c in clients:
            await rig.cli.push(rig.cli.text(c, f"{c} {i:02d}"))
    await rig.until(lambda: len(rig.hub.journal) == 60, "sixty messages")
    for c in clients:
        assert [i.text for i in rig.hub.journal if i.chat == c] == [f"{c} {i:02d}" for i in range(20)]

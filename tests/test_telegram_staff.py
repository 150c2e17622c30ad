"""Staff side: a forum supergroup with one topic per conversation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from bots.base import EmployeeInfo
from bots.telegram import TelegramChannel, create
from fake_telegram import FakeTelegram
from relay.model import Attachment, Outgoing, Party
from telegram_support import STAFF_GROUP, STAFF_TOKEN, MemoryState, Recorder, make_ctx

NAME = "telegram-staff"
CLIENT = Party("telegram-clients", "4242", "Ann Lee")
ALICE = FakeTelegram.user(9001, "Alice", "Adams")
MALLORY = FakeTelegram.user(6666, "Mallory")


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    server = FakeTelegram()
    await server.start()
    server.add_bot(STAFF_TOKEN, "relay_staff_bot")
    server.add_forum(STAFF_GROUP, "Staff desk")
    yield server
    await server.stop()


@asynccontextmanager
async def staff(fake: FakeTelegram, state: MemoryState | None = None) -> AsyncIterator[tuple[TelegramChannel, Recorder, MemoryState]]:
    state = state or MemoryState()
    settings = {"token": STAFF_TOKEN, "side": "staff", "staff_group": str(STAFF_GROUP), "base_url": fake.base_url,
                "base_file_url": fake.base_file_url, "poll_timeout": 1, "backoff_max": 0.2}
    employees = {"9001": EmployeeInfo("alice", "Alice Adams", "9001")}
    channel = create(NAME, settings, make_ctx(NAME, "staff", state, employees=employees))
    rec = Recorder()
    await channel.start(rec)
    try:
        yield channel, rec, state
    finally:
        await channel.stop()


def to_staff(text: str, mid: str = "m-1", conversation: str = "c-1", **kw: Any) -> Outgoing:
    return Outgoing(conversation=conversation, to=Party(NAME, "9001", "Alice Adams"), text=text, message_id=mid,
                    client=CLIENT, origin=CLIENT, **kw)


async def test_first_message_creates_a_topic_named_after_the_client(fake: FakeTelegram) -> None:
    async with staff(fake) as (channel, _, state):
        pid = await channel.send(to_staff("Hello, I need help"))
        await channel.send(to_staff("Are you there?", mid="m-2"))
    [(thread, name)] = fake.topics[STAFF_GROUP].items()
    assert name == "Ann Lee (telegram-clients)"
    assert len(fake.called("createForumTopic")) == 1
    msgs = fake.sent(STAFF_GROUP, thread)
    assert [m["text"] for m in msgs] == ["Hello, I need help", "Are you there?"]
    assert pid == f"{STAFF_GROUP}:{msgs[0]['message_id']}"
    assert state.data["topic:c-1"] == str(thread) and state.data[f"thread:{thread}"] == "c-1"


async def test_topic_map_survives_a_restart_and_concurrent_first_sends(fake: FakeTelegram) -> None:
    state = MemoryState()
    async with staff(fake, state) as (channel, _, _):
        await asyncio.gather(*(channel.send(to_staff(f"msg {i}", mid=f"m-{i}", conversation="c-7")) for i in range(5)))
    async with staff(fake, state) as (channel, _, _):
        await channel.send(to_staff("after restart", mid="m-9", conversation="c-7"))
    assert len(fake.called("createForumTopic")) == 1
    [thread] = fake.topics[STAFF_GROUP]
    assert len(fake.sent(STAFF_GROUP, thread)) == 6


async def test_staff_message_in_a_topic_is_a_reply_to_that_conversation(fake: FakeTelegram) -> None:
    async with staff(fake) as (channel, rec, _):
        first = await channel.send(to_staff("Hello"))
        [thread] = fake.topics[STAFF_GROUP]
        plain = fake.user_message(STAFF_TOKEN, ALICE, chat_id=STAFF_GROUP, thread=thread, text="Hi Ann, how can I help?")
        bot_msg = fake.sent(STAFF_GROUP, thread)[0]
        fake.user_message(STAFF_TOKEN, ALICE, chat_id=STAFF_GROUP, thread=thread, text="answering this",
                          reply_to_message=bot_msg)
        fake.user_message(STAFF_TOKEN, ALICE, chat_id=STAFF_GROUP, thread=thread, caption="the form",
                          **fake.document(b"%PDF-1.7", "form.pdf", "application/pdf"))
        edited = fake.user_edit(STAFF_TOKEN, plain, text="Hi Ann, how may I help?")
        a, b, c, d = await rec.wait_for(4)
    assert (a.chat, a.kind, a.text) == ("c-1", "message", "Hi Ann, how can I help?")
    assert a.sender == Party(NAME, "9001", "Alice Adams")
    assert a.platform_id == f"{STAFF_GROUP}:{plain['message_id']}" and a.reply_to is None
    assert b.reply_to == first
    assert c.attachments[0].data == b"%PDF-1.7" and c.text == "the form"
    assert (d.kind, d.edits, d.chat, d.text) == ("edit", a.platform_id, "c-1", "Hi Ann, how may I help?")
    assert d.platform_id == f"{a.platform_id}:e{edited['edit_date']}"


async def test_unknown_staff_user_is_delivered_for_the_hub_to_refuse(fake: FakeTelegram) -> None:
    async with staff(fake) as (channel, rec, _):
        await channel.send(to_staff("Hello"))
        [thread] = fake.topics[STAFF_GROUP]
        fake.user_message(STAFF_TOKEN, MALLORY, chat_id=STAFF_GROUP, thread=thread, text="I am not staff")
        [got] = await rec.wait_for(1)
        assert (got.kind, got.chat, got.sender.user) == ("message", "c-1", "6666")
        notice = Outgoing("c-1", Party(NAME, "6666", "Mallory"), "Not forwarded: you are not a configured employee.",
                          "n-1", kind="notice")
        await channel.send(notice)
    assert fake.sent(STAFF_GROUP, thread)[-1]["text"] == "Not forwarded: you are not a configured employee."


async def test_messages_outside_conversation_topics_are_events(fake: FakeTelegram) -> None:
    """...except a message in a topic relay does not know: the hub refuses it and the writer is
    told in that topic (tests/test_telegram_topics.py), so it travels as a message."""
    other = fake.add_group(-777, "Elsewhere")
    async with staff(fake) as (channel, rec, _):
        fake.user_message(STAFF_TOKEN, ALICE, chat_id=STAFF_GROUP, text="general chatter")
        fake.user_message(STAFF_TOKEN, ALICE, chat_id=STAFF_GROUP, thread=424242, text="unknown topic")
        fake.user_message(STAFF_TOKEN, ALICE, chat_id=other["id"], text="other group")
        fake.user_message(STAFF_TOKEN, ALICE, text="private to the staff bot")
        got = await rec.wait_for(4)
    by_raw = {next(t for t in ("general chatter", "unknown topic", "other group", "private to") if t.encode() in g.raw): g
              for g in got}
    assert {t: (g.kind, g.chat) for t, g in by_raw.items()} == {
        "general chatter": ("event", ""), "unknown topic": ("message", "telegram-topic:424242"),
        "other group": ("event", ""), "private to": ("event", "")}
    assert all(b'"update_id"' in g.raw for g in got)


async def test_verdict_and_refused_files_are_shown_to_staff(fake: FakeTelegram) -> None:
    refused = Attachment("big.iso", "application/x-iso9660-image", 10**9, refused="too large: 1000000000 > 26214400")
    photo = Attachment.of("scan.jpg", "image/jpeg", b"\xff\xd8scan")
    async with staff(fake) as (channel, _, _):
        pid = await channel.send(to_staff("card [REDACTED]", action="redact", rules=("PII-001",), attachments=(photo, refused)))
        [msg] = fake.sent(STAFF_GROUP, fake.topics[STAFF_GROUP].__iter__().__next__())
        assert "photo" in msg
        assert msg["caption"] == "[redact: PII-001]\n[file not delivered: big.iso (too large: 1000000000 > 26214400)]\ncard [REDACTED]"
        await channel.send(to_staff("card [REDACTED] (fixed)", mid="m-2", kind="edit", edits=pid, action="redact", rules=("PII-001",)))
    assert msg["caption"] == "[redact: PII-001]\ncard [REDACTED] (fixed)"
    assert fake.called("editMessageCaption") and not fake.called("editMessageText")

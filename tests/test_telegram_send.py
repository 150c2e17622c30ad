"""Sending through the Telegram channel: splitting, files, edits, deletes and error mapping."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bots.base import Permanent, Retryable
from bots.telegram import TelegramChannel, create
from bots.telegram.format import split_text, utf16_len
from fake_telegram import FakeTelegram
from relay.model import Attachment, Outgoing, Party
from telegram_support import CLIENT_TOKEN, MemoryState, make_ctx

ANN = FakeTelegram.user(4242, "Ann", "Lee")
TO = Party("telegram-clients", str(ANN["id"]), "Ann Lee")


# PTB itself warns about its own RetryAfter.retry_after type change when building a 429 error.
pytestmark = pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")

@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    server = FakeTelegram()
    await server.start()
    server.add_bot(CLIENT_TOKEN, "relay_client_bot")
    server.private_chat(ANN)
    yield server
    await server.stop()


@pytest.fixture
async def channel(fake: FakeTelegram) -> AsyncIterator[TelegramChannel]:
    settings = {"token": CLIENT_TOKEN, "side": "client", "base_url": fake.base_url, "base_file_url": fake.base_file_url,
                "request_timeout": 0.5}
    ch = create("telegram-clients", settings, make_ctx("telegram-clients", "client", MemoryState()))
    yield ch
    await ch.stop()


def out(text: str, mid: str = "m-1", **kw: Any) -> Outgoing:
    return Outgoing(conversation="c-1", to=TO, text=text, message_id=mid, **kw)


def chat_texts(fake: FakeTelegram) -> list[str]:
    return [m.get("text", m.get("caption", "")) for m in fake.sent(ANN["id"])]


async def test_text_message_returns_chat_colon_message_id(fake: FakeTelegram, channel: TelegramChannel) -> None:
    pid = await channel.send(out("Good morning"))
    [msg] = fake.sent(ANN["id"])
    assert pid == f"{ANN['id']}:{msg['message_id']}" and msg["text"] == "Good morning"


async def test_long_text_is_split_and_edits_follow_the_parts(fake: FakeTelegram, channel: TelegramChannel) -> None:
    paragraphs = [f"paragraph {i} " + "word " * 150 for i in range(14)]
    text = "\n".join(paragraphs)
    assert len(text) > 2 * 4096
    pid = await channel.send(out(text))
    sent = fake.sent(ANN["id"])
    assert len(sent) == 3 and pid == f"{ANN['id']}:{sent[0]['message_id']}"
    assert all(utf16_len(m["text"]) <= 4096 for m in sent)
    assert "".join(m["text"] for m in sent).replace("\n", "") == text.replace("\n", "")
    await channel.send(out("short now", mid="m-2", kind="edit", edits=pid))
    assert chat_texts(fake) == ["short now"], "surplus parts are deleted when an edit gets shorter"


async def test_split_resumes_after_a_failure_without_duplicates(fake: FakeTelegram, channel: TelegramChannel) -> None:
    text = "\n".join("line %d %s" % (i, "x" * 90) for i in range(120))
    fake.inject("429", "sendMessage", retry_after=2, skip=1)
    with pytest.raises(Retryable) as info:
        await channel.send(out(text, mid="m-9"))
    assert info.value.after == 2
    assert len(fake.sent(ANN["id"])) == 1
    pid = await channel.send(out(text, mid="m-9"))
    assert chat_texts(fake) == split_text(text) and len(split_text(text)) == 3
    assert pid == f"{ANN['id']}:{fake.sent(ANN['id'])[0]['message_id']}"


async def test_caption_over_1024_continues_as_text(fake: FakeTelegram, channel: TelegramChannel) -> None:
    caption = "c" * 1000 + " " + "d" * 500
    photo = Attachment.of("scan.jpg", "image/jpeg", b"\xff\xd8jpeg")
    pid = await channel.send(out(caption, attachments=(photo,)))
    first, second = fake.sent(ANN["id"])
    assert "photo" in first and first["caption"] == "c" * 1000
    assert second["text"] == "d" * 500
    assert pid == f"{ANN['id']}:{first['message_id']}"
    await channel.send(out("new caption", mid="m-2", kind="edit", edits=pid))
    assert [m.get("caption", m.get("text")) for m in fake.sent(ANN["id"])] == ["new caption"]


async def test_files_use_the_matching_send_method(fake: FakeTelegram, channel: TelegramChannel) -> None:
    await channel.send(out("photo", mid="a", attachments=(Attachment.of("a.png", "image/png", b"png"),)))
    await channel.send(out("doc", mid="b", attachments=(Attachment.of("a.pdf", "application/pdf", b"%PDF"),)))
    await channel.send(out("", mid="c", attachments=(Attachment.of("voice-1.ogg", "audio/ogg", b"OggS"),)))
    await channel.send(out("", mid="d", attachments=(Attachment.of("v.mp4", "video/mp4", b"mp4"),)))
    await channel.send(out("", mid="e", attachments=(Attachment.of("s.mp3", "audio/mpeg", b"ID3"),)))
    album = tuple(Attachment.of(f"p{i}.jpg", "image/jpeg", bytes([i]) * 10) for i in range(3))
    pid = await channel.send(out("album", mid="f", attachments=album))
    methods = [c.method for c in fake.calls if c.method.startswith("send")]
    assert methods == ["sendPhoto", "sendDocument", "sendVoice", "sendVideo", "sendAudio", "sendMediaGroup"]
    group = fake.sent(ANN["id"])[-3:]
    assert len({m["media_group_id"] for m in group}) == 1 and group[0]["caption"] == "album"
    assert [fake.file_bytes(m["photo"][-1]["file_id"]) for m in group] == [bytes([i]) * 10 for i in range(3)]
    assert pid == f"{ANN['id']}:{group[0]['message_id']}"


async def test_refused_attachment_is_named_in_the_text(fake: FakeTelegram, channel: TelegramChannel) -> None:
    refused = Attachment("huge.zip", "application/zip", 10**9, refused="too large: 1000000000 > 26214400")
    await channel.send(out("see attached", attachments=(refused,)))
    assert chat_texts(fake) == ["[file not delivered: huge.zip (too large: 1000000000 > 26214400)]\nsee attached"]


async def test_edit_and_delete(fake: FakeTelegram, channel: TelegramChannel) -> None:
    pid = await channel.send(out("first version"))
    assert await channel.send(out("second version", mid="m-2", kind="edit", edits=pid)) == pid
    assert chat_texts(fake) == ["second version"]
    await channel.send(out("second version", mid="m-3", kind="edit", edits=pid))  # not modified: fine
    await channel.send(out("", mid="m-4", kind="delete", edits=pid))
    assert fake.sent(ANN["id"]) == []


@pytest.mark.parametrize(
    "fault, kw, expect, words",
    [
        ("429", {"retry_after": 7}, Retryable, "flood control"),
        ("500", {}, Retryable, "Internal Server Error"),
        ("502", {}, Retryable, "Bad Gateway"),
        ("slow", {"delay": 1.5}, Retryable, "timed out"),
        ("drop", {}, Retryable, ""),
        ("400", {}, Permanent, "chat not found"),
        ("403", {}, Permanent, "bot was blocked by the user"),
    ],
)
async def test_errors_map_to_retryable_or_permanent(
    fake: FakeTelegram, channel: TelegramChannel, fault: str, kw: dict[str, Any], expect: type, words: str
) -> None:
    await channel.send(out("warm-up", mid="w"))
    fake.inject(fault, "sendMessage", **kw)
    with pytest.raises(expect) as info:
        await channel.send(out("hello"))
    assert words.lower() in info.value.reason.lower()
    if fault == "429":
        assert info.value.after == 7


async def test_blocked_user_and_unknown_chat_are_permanent(fake: FakeTelegram, channel: TelegramChannel) -> None:
    fake.block(CLIENT_TOKEN, ANN["id"])
    with pytest.raises(Permanent, match="blocked by the user"):
        await channel.send(out("hi"))
    stranger = Party("telegram-clients", "99999", "?")
    with pytest.raises(Permanent, match="(?i)chat not found"):
        await channel.send(Outgoing("c-2", stranger, "hi", "m-5"))


@given(st.text(alphabet=st.sampled_from(["a", "b", " ", "\n", "\U0001F600", "é"]), max_size=400), st.integers(5, 60))
def test_split_text_respects_the_limit_and_keeps_content(text: str, limit: int) -> None:
    parts = split_text(text, limit)
    assert all(utf16_len(p) <= limit for p in parts)
    assert "".join(parts).replace(" ", "").replace("\n", "") == text.replace(" ", "").replace("\n", "")


async def test_reply_to_points_at_the_original_and_survives_its_deletion(fake: FakeTelegram, channel: TelegramChannel) -> None:
    first = await channel.send(out("the question"))
    await channel.send(out("the answer", mid="m-2", reply_to=first))
    answer = fake.sent(ANN["id"])[-1]
    assert answer["reply_to_message"]["text"] == "the question"
    await channel.send(out("", mid="m-3", kind="delete", edits=first))
    await channel.send(out("still sent", mid="m-4", reply_to=first))
    assert chat_texts(fake) == ["the answer", "still sent"]

"""Client-side receiving: every update type, albums, edits, size checks, offset discipline.

The real python-telegram-bot Bot inside bots/telegram/ talks HTTP to tests/fake_telegram.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from bots.base import ChannelConfigError
from bots.telegram import TelegramChannel, create
from fake_telegram import FakeTelegram
from relay.model import Inbound
from telegram_support import CLIENT_TOKEN, STAFF_GROUP, STAFF_TOKEN, MemoryState, Recorder, eventually, make_ctx

ANN = FakeTelegram.user(4242, "Ann", "Lee", "annlee")


# PTB itself warns about its own RetryAfter.retry_after type change when building a 429 error.
pytestmark = pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")

@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    server = FakeTelegram()
    await server.start()
    server.add_bot(CLIENT_TOKEN, "relay_client_bot")
    server.add_bot(STAFF_TOKEN, "relay_staff_bot")
    server.add_forum(STAFF_GROUP, "Staff desk")
    yield server
    await server.stop()


def settings(fake: FakeTelegram, **extra: Any) -> dict[str, Any]:
    return {
        "token": CLIENT_TOKEN,
        "side": "client",
        "base_url": fake.base_url,
        "base_file_url": fake.base_file_url,
        "poll_timeout": 1,
        "album_window": 0.3,
        "request_timeout": 2,
        "backoff_max": 0.2,
        **extra,
    }


@asynccontextmanager
async def client(
    fake: FakeTelegram, state: MemoryState | None = None, recorder: Recorder | None = None, max_bytes: int = 1_000_000, **extra: Any
) -> AsyncIterator[tuple[TelegramChannel, Recorder, MemoryState]]:
    state = state or MemoryState()
    recorder = recorder or Recorder()
    channel = create("telegram-clients", settings(fake, **extra), make_ctx("telegram-clients", "client", state, max_bytes=max_bytes))
    await channel.start(recorder)
    try:
        yield channel, recorder, state
    finally:
        await channel.stop()


async def one(fake: FakeTelegram, **content: Any) -> Inbound:
    async with client(fake) as (_, rec, _state):
        fake.user_message(CLIENT_TOKEN, ANN, **content)
        return (await rec.wait_for(1))[0]


async def test_text_message_is_normalized_with_raw_update(fake: FakeTelegram) -> None:
    async with client(fake) as (_, rec, state):
        msg = fake.user_message(CLIENT_TOKEN, ANN, text="Hello, I need help with my account")
        [got] = await rec.wait_for(1)
        assert got.channel == "telegram-clients"
        assert got.chat == str(ANN["id"])
        assert got.sender.user == str(ANN["id"]) and got.sender.display == "Ann Lee"
        assert got.platform_id == f"{ANN['id']}:{msg['message_id']}"
        assert got.kind == "message" and got.text == "Hello, I need help with my account"
        assert got.sent_at == msg["date"]
        raw = json.loads(got.raw)
        assert raw["message"] == msg and isinstance(raw["update_id"], int)
        await eventually(lambda: state.data.get("offset") == str(raw["update_id"] + 1))


@pytest.mark.parametrize(
    "build, name, mime",
    [
        (lambda f, d: f.photo(d), "photo-", "image/jpeg"),
        (lambda f, d: f.document(d, "statement.pdf", "application/pdf"), "statement.pdf", "application/pdf"),
        (lambda f, d: f.voice(d), "voice-", "audio/ogg"),
        (lambda f, d: f.audio(d, "song.mp3"), "song.mp3", "audio/mpeg"),
        (lambda f, d: f.video(d, "clip.mp4"), "clip.mp4", "video/mp4"),
        (lambda f, d: f.video_note(d), "video_note-", "video/mp4"),
        (lambda f, d: f.sticker(d), "sticker-", "image/webp"),
        (lambda f, d: f.animation(d), "cat.gif.mp4", "video/mp4"),
    ],
    ids=["photo", "document", "voice", "audio", "video", "video_note", "sticker", "animation"],
)
async def test_every_file_type_is_fetched_and_attached(fake: FakeTelegram, build: Any, name: str, mime: str) -> None:
    data = bytes(range(256)) * 7
    content = build(fake, data)
    got = await one(fake, **content)
    assert got.kind == "message"
    assert len(got.attachments) == 1, got.attachments
    att = got.attachments[0]
    assert att.name.startswith(name) and att.mime == mime
    assert att.data == data and att.size == len(data) and not att.refused
    key = next(k for k in ("animation", "photo", "document", "voice", "audio", "video", "video_note", "sticker") if k in content)
    item = content[key][-1] if key == "photo" else content[key]
    assert att.platform_ref == item["file_id"]
    assert len(fake.downloads) == 1


async def test_photo_keeps_caption_and_largest_size(fake: FakeTelegram) -> None:
    data = b"\xff\xd8" + b"p" * 4000
    got = await one(fake, caption="my card 4111 1111 1111 1111", **fake.photo(data))
    assert got.text == "my card 4111 1111 1111 1111"
    assert [a.data for a in got.attachments] == [data]


async def test_location_venue_and_contact_become_text(fake: FakeTelegram) -> None:
    async with client(fake) as (_, rec, _state):
        fake.user_message(CLIENT_TOKEN, ANN, location={"latitude": 52.52, "longitude": 13.405})
        fake.user_message(CLIENT_TOKEN, ANN, location={"latitude": 48.85, "longitude": 2.35},
                          venue={"location": {"latitude": 48.85, "longitude": 2.35}, "title": "Branch", "address": "1 Rue X"})
        vcard = "BEGIN:VCARD\nVERSION:3.0\nFN:Bob Smith\nTEL:+15550100\nEND:VCARD"
        fake.user_message(CLIENT_TOKEN, ANN, contact={"phone_number": "+15550100", "first_name": "Bob", "last_name": "Smith",
                                                       "user_id": 777, "vcard": vcard})
        loc, venue, contact = await rec.wait_for(3)
    assert loc.kind == "message" and loc.text == "Location: 52.52, 13.405"
    assert venue.text == "Venue: Branch, 1 Rue X (48.85, 2.35)"
    assert contact.text == "Contact: Bob Smith, +15550100 (Telegram user 777)"
    assert [(a.name, a.mime, a.data) for a in contact.attachments] == [("contact.vcf", "text/vcard", vcard.encode())]


async def test_anything_else_is_an_event_with_raw_json(fake: FakeTelegram) -> None:
    chat = fake.private_chat(ANN)
    bot_user = fake.bots[CLIENT_TOKEN].user
    async with client(fake) as (_, rec, _state):
        dice = fake.user_message(CLIENT_TOKEN, ANN, dice={"emoji": "\U0001F3B2", "value": 4})
        fake.push(CLIENT_TOKEN, "callback_query", {"id": "cq1", "from": ANN, "chat_instance": "ci", "data": "yes",
                                                   "message": {"message_id": 99, "date": 1, "chat": chat, "text": "Q?"}})
        fake.push(CLIENT_TOKEN, "my_chat_member", {"chat": chat, "from": ANN, "date": 1700000000,
                                                   "old_chat_member": {"status": "member", "user": bot_user},
                                                   "new_chat_member": {"status": "kicked", "user": bot_user, "until_date": 0}})
        fake.push(CLIENT_TOKEN, "poll", {"id": "p1", "question": "?", "options": [], "total_voter_count": 0, "is_closed": False,
                                         "is_anonymous": True, "type": "regular", "allows_multiple_answers": False})
        group = fake.add_group(-555, "Some group")
        fake.user_message(CLIENT_TOKEN, ANN, chat_id=group["id"], text="hi group")
        fake.push(CLIENT_TOKEN, "inline_query", {"id": "iq1", "from": ANN, "query": "rates", "offset": ""})
        got = await rec.wait_for(6)
    assert [g.kind for g in got] == ["event"] * 6
    by_type = {next(k for k in json.loads(g.raw) if k != "update_id"): g for g in got}
    assert by_type["message"].platform_id in {f"{ANN['id']}:{dice['message_id']}", "-555:1"}
    dice_event = next(g for g in got if g.platform_id == f"{ANN['id']}:{dice['message_id']}")
    assert dice_event.text == "[telegram dice]" and json.loads(dice_event.raw)["message"]["dice"]["value"] == 4
    assert by_type["callback_query"].text == "[telegram callback_query]" and by_type["callback_query"].sender.user == str(ANN["id"])
    assert by_type["my_chat_member"].text == "[telegram my_chat_member]" and by_type["my_chat_member"].chat == str(ANN["id"])
    assert by_type["poll"].chat == "" and by_type["poll"].platform_id.startswith("update:")
    assert by_type["inline_query"].chat == str(ANN["id"]), "a user's private chat id is their id"
    group_event = next(g for g in got if g.platform_id == "-555:1")
    assert "group" in group_event.text and group_event.chat == "-555"
    for g in got:
        assert json.loads(g.raw)["update_id"] > 0


async def test_edited_message_is_an_edit_of_the_original(fake: FakeTelegram) -> None:
    async with client(fake) as (_, rec, _state):
        msg = fake.user_message(CLIENT_TOKEN, ANN, text="call me at 555")
        first = (await rec.wait_for(1))[0]
        edited = fake.user_edit(CLIENT_TOKEN, msg, text="call me tomorrow")
        second = (await rec.wait_for(2))[1]
    assert second.kind == "edit"
    assert second.edits == first.platform_id
    assert second.platform_id == f"{first.platform_id}:e{edited['edit_date']}"
    assert second.text == "call me tomorrow"
    assert second.sent_at == edited["edit_date"]


async def test_album_reaches_the_hub_as_one_message_with_all_files(fake: FakeTelegram) -> None:
    files = [bytes([i]) * (300 + i) for i in range(3)]
    async with client(fake) as (_, rec, state):
        parts = []
        for i, data in enumerate(files):
            extra = {"caption": "three scans"} if i == 0 else {}
            parts.append(fake.user_message(CLIENT_TOKEN, ANN, media_group_id="13579", **extra, **fake.photo(data)))
        after = fake.user_message(CLIENT_TOKEN, ANN, text="did you get them?")
        album, text = await rec.wait_for(2)
        assert album.platform_id == f"{ANN['id']}:{parts[0]['message_id']}"
        assert [a.data for a in album.attachments] == files
        assert album.text == "three scans"
        assert [u["message"]["message_id"] for u in json.loads(album.raw)] == [p["message_id"] for p in parts]
        assert text.text == "did you get them?"
        # an edit of a later album part points at the album
        fake.user_edit(CLIENT_TOKEN, parts[1], caption="second scan")
        edit = (await rec.wait_for(3))[2]
        assert edit.kind == "edit" and edit.edits == album.platform_id


async def test_album_holds_the_offset_until_it_is_delivered(fake: FakeTelegram) -> None:
    async with client(fake, album_window=0.8) as (_, rec, state):
        fake.user_message(CLIENT_TOKEN, ANN, text="before")
        [before] = await rec.wait_for(1)
        first_id = json.loads(before.raw)["update_id"]
        await eventually(lambda: state.data.get("offset") == str(first_id + 1))
        part = fake.user_message(CLIENT_TOKEN, ANN, media_group_id="g1", **fake.photo(b"a" * 50))
        await eventually(lambda: len(fake.called("getUpdates")) >= 3 and fake.called("getUpdates")[-1].params.get("timeout") == "0")
        assert len(rec.inbounds) == 1
        assert state.data["offset"] == str(first_id + 1), "offset moved past an album not yet journaled"
        got = await rec.wait_for(2)
        assert got[1].platform_id == f"{ANN['id']}:{part['message_id']}"
        await eventually(lambda: state.data["offset"] == str(first_id + 2))


async def test_oversized_file_is_refused_before_download(fake: FakeTelegram) -> None:
    big = b"z" * 5000
    async with client(fake, max_bytes=4000) as (_, rec, _state):
        fake.user_message(CLIENT_TOKEN, ANN, caption="here", **fake.document(big, "huge.zip", "application/zip"))
        [got] = await rec.wait_for(1)
    [att] = got.attachments
    assert att.refused == "too large: 5000 > 4000"
    assert att.data == b"" and att.size == 5000 and att.name == "huge.zip"
    assert fake.downloads == [] and fake.called("getFile") == []
    assert got.text == "here"


async def test_file_without_declared_size_is_checked_by_get_file(fake: FakeTelegram) -> None:
    content = fake.document(b"q" * 5000, "nosize.bin", "application/octet-stream")
    del content["document"]["file_size"]
    async with client(fake, max_bytes=4000) as (_, rec, _state):
        fake.user_message(CLIENT_TOKEN, ANN, **content)
        [got] = await rec.wait_for(1)
    assert got.attachments[0].refused == "too large: 5000 > 4000"
    assert len(fake.called("getFile")) == 1 and fake.downloads == []


async def test_offset_advances_only_after_deliver_returns(fake: FakeTelegram) -> None:
    rec = Recorder()
    rec.fail_next = 1
    async with client(fake, recorder=rec) as (_, _rec, state):
        fake.user_message(CLIENT_TOKEN, ANN, text="first")
        fake.user_message(CLIENT_TOKEN, ANN, text="second")
        got = await rec.wait_for(2)
        last = json.loads(got[1].raw)["update_id"]
        await eventually(lambda: any(c.params.get("offset") == str(last + 1) for c in fake.called("getUpdates")))
    assert [g.text for g in got] == ["first", "second"]
    assert rec.calls == 3  # the failed attempt, then both
    first_id = json.loads(got[0].raw)["update_id"]
    offsets = [c.params["offset"] for c in fake.called("getUpdates") if "offset" in c.params]
    distinct = [o for i, o in enumerate(offsets) if i == 0 or offsets[i - 1] != o]
    assert distinct[:2] == [str(first_id), str(first_id + 2)], "the offset must not pass an update whose delivery failed"
    assert state.data["offset"] == str(first_id + 2)


async def test_restart_mid_stream_loses_nothing(fake: FakeTelegram) -> None:
    """A relay killed while a delivery is in flight gets that update again on restart."""
    state = MemoryState()
    stuck = asyncio.Event()

    class Hanging(Recorder):
        async def __call__(self, inbound: Inbound) -> Any:
            if inbound.text == "three":
                stuck.set()
                await asyncio.Event().wait()
            return await super().__call__(inbound)

    first = Hanging()
    async with client(fake, state=state, recorder=first):
        for text in ("one", "two", "three", "four"):
            fake.user_message(CLIENT_TOKEN, ANN, text=text)
        await asyncio.wait_for(stuck.wait(), 5)
    assert [i.text for i in first.inbounds] == ["one", "two"]
    second = Recorder()
    second.seen = set(first.seen)  # the journal remembers what it has
    async with client(fake, state=state, recorder=second):
        fake.user_message(CLIENT_TOKEN, ANN, text="five")
        await second.wait_for(3)
    assert [i.text for i in first.inbounds + second.inbounds] == ["one", "two", "three", "four", "five"]


async def test_polling_reconnects_after_errors(fake: FakeTelegram) -> None:
    fake.inject("500", "getUpdates")
    fake.inject("drop", "getUpdates")
    fake.inject("429", "getUpdates", retry_after=1)
    async with client(fake) as (_, rec, _state):
        fake.user_message(CLIENT_TOKEN, ANN, text="still there?")
        [got] = await rec.wait_for(1, timeout=8)
    assert got.text == "still there?"
    assert [k for m, k in fake.fault_log] == ["500", "drop", "429"]


async def test_transient_download_failure_retries_the_update(fake: FakeTelegram) -> None:
    fake.inject("drop", "download")
    async with client(fake) as (_, rec, _state):
        fake.user_message(CLIENT_TOKEN, ANN, **fake.document(b"d" * 100, "a.txt", "text/plain"))
        [got] = await rec.wait_for(1, timeout=8)
    assert got.attachments[0].data == b"d" * 100
    assert len(fake.downloads) == 2


async def test_start_command_is_a_message_that_opens_the_conversation(fake: FakeTelegram) -> None:
    got = await one(fake, text="/start ref-42", entities=[{"type": "bot_command", "offset": 0, "length": 6}])
    assert (got.kind, got.text, got.chat) == ("message", "/start ref-42", str(ANN["id"]))


@pytest.mark.parametrize(
    "block, field",
    [
        ({"token": ""}, "token"),
        ({"mode": "push"}, "mode"),
        ({"mode": "webhook"}, "webhook_secret"),
        ({"mode": "webhook", "webhook_secret": "bad secret!"}, "webhook_secret"),
        ({"side": "staff"}, "staff_group"),
        ({"poll_timeout": "soon"}, "poll_timeout"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_config_errors_name_the_field(block: dict[str, Any], field: str) -> None:
    base = {"token": "1:x", "side": "client"}
    with pytest.raises(ChannelConfigError, match=rf"channels\.tg\.{field}:"):
        create("tg", {**base, **block}, make_ctx("tg", "client"))


async def test_a_failing_state_store_does_not_stop_polling(fake: FakeTelegram) -> None:
    class Flaky(MemoryState):
        def __init__(self) -> None:
            super().__init__()
            self.failures = 2

        async def put(self, key: str, value: str) -> None:
            if self.failures > 0:
                self.failures -= 1
                raise OSError("disk full (test)")
            await super().put(key, value)

    state = Flaky()
    async with client(fake, state=state) as (_, rec, _state):
        fake.user_message(CLIENT_TOKEN, ANN, text="one")
        await rec.wait_for(1)
        fake.user_message(CLIENT_TOKEN, ANN, text="two")
        got = await rec.wait_for(2, timeout=8)
        last = json.loads(got[1].raw)["update_id"]
        await eventually(lambda: state.data.get("offset") == str(last + 1))
    assert [g.text for g in got] == ["one", "two"] and state.failures == 0


async def test_a_malformed_update_is_journaled_as_an_event_and_does_not_block(fake: FakeTelegram) -> None:
    async with client(fake) as (_, rec, _state):
        fake.push(CLIENT_TOKEN, "message", {"chat": {"id": ANN["id"], "type": "private"}, "date": 1, "text": "no id"})
        fake.user_message(CLIENT_TOKEN, ANN, text="next one")
        bad, good = await rec.wait_for(2)
    assert bad.kind == "event" and "could not read" in bad.text and bad.platform_id.startswith("update:")
    assert json.loads(bad.raw)["message"]["text"] == "no id"  # the update as received, like any other
    assert good.text == "next one"

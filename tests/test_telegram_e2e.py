"""End to end: a whole relay (journal, shipped policies, hub, outbox) with two Telegram
channels, client and staff side, both on the fake Bot API server with their own bot tokens.
"""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from fake_telegram import FakeTelegram
from relay.app import RelayApp
from telegram_support import CLIENT_TOKEN, STAFF_GROUP, STAFF_TOKEN, eventually

ROOT = Path(__file__).resolve().parents[1]
ANN = FakeTelegram.user(4242, "Ann", "Lee")
ALICE = FakeTelegram.user(9001, "Alice", "Adams")
MALLORY = FakeTelegram.user(6666, "Mallory")
NOTICE = "This conversation is recorded for regulatory purposes."


# PTB itself warns about its own RetryAfter.retry_after type change when building a 429 error.
pytestmark = pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")

@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    server = FakeTelegram()
    await server.start()
    server.add_bot(CLIENT_TOKEN, "bank_bot")
    server.add_bot(STAFF_TOKEN, "bank_staff_bot")
    server.add_forum(STAFF_GROUP, "Advisors")
    yield server
    await server.stop()


def config(data_dir: Path, fake: FakeTelegram, welcome: str | None = None, **extra: Any) -> dict[str, Any]:
    common = {"base_url": fake.base_url, "base_file_url": fake.base_file_url, "poll_timeout": 1,
              "album_window": 0.3, "backoff_max": 0.3, "request_timeout": 3}
    clients: dict[str, Any] = {"network": "telegram", "side": "client", "token": CLIENT_TOKEN, **common}
    if welcome:
        clients["welcome"] = welcome
    return {
        "data_dir": str(data_dir),
        "listen": {"host": "127.0.0.1", "port": 0},
        "policies": {"dir": str(ROOT / "policies")},
        "journal": {"checkpoint_seconds": 3600},
        "outbox": {"base_delay": 0.05, "max_delay": 0.5},
        "channels": {
            "telegram-clients": clients,
            "telegram-staff": {"network": "telegram", "side": "staff", "token": STAFF_TOKEN,
                               "staff_group": STAFF_GROUP, **common},
        },
        "employees": {"alice": {"name": "Alice Adams", "staff": {"channel": "telegram-staff", "address": str(ALICE["id"])},
                                "groups": ["advisors"]}},
        "desks": {"advisors": {"clients": ["telegram-clients"], "members": ["alice"]}},
        **extra,
    }


def topic_texts(fake: FakeTelegram) -> list[str]:
    threads = list(fake.topics[STAFF_GROUP])
    return [m.get("text", m.get("caption", "")) for t in threads for m in fake.sent(STAFF_GROUP, t)]


def client_texts(fake: FakeTelegram) -> list[str]:
    return [m.get("text", m.get("caption", "")) for m in fake.sent(ANN["id"])]


async def only_thread(fake: FakeTelegram) -> int:
    await eventually(lambda: fake.topics[STAFF_GROUP])
    [thread] = fake.topics[STAFF_GROUP]
    return thread


async def test_card_number_in_a_photo_caption_reaches_the_topic_redacted(tmp_path: Path, fake: FakeTelegram) -> None:
    photo = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 20
    relay = await RelayApp.start(config(tmp_path / "data", fake))
    try:
        fake.user_message(CLIENT_TOKEN, ANN, caption="my card is 4111 1111 1111 1111, please check", **fake.photo(photo))
        thread = await only_thread(fake)
        await eventually(lambda: fake.sent(STAFF_GROUP, thread))
        [msg] = fake.sent(STAFF_GROUP, thread)
        assert fake.topics[STAFF_GROUP][thread] == "Ann Lee (telegram-clients)"
        assert "4111" not in msg["caption"] and "[REDACTED]" in msg["caption"]
        assert "PII-001" in msg["caption"]
        assert fake.file_bytes(msg["photo"][-1]["file_id"]) == photo
        rows = await relay.journal.fetchall("SELECT body_json FROM events WHERE kind = 'message.received'")
        body = json.loads(rows[0]["body_json"])
        assert body["text"] == "my card is 4111 1111 1111 1111, please check", "the journal keeps the original"
        raw = await relay.journal.get_blob(body["raw_sha256"]) if body.get("raw_sha256") else base64.b64decode(body["raw_inline"])
        assert raw is not None and json.loads(raw)["message"]["caption"].startswith("my card is 4111")
        assert await relay.journal.get_blob(body["attachments"][0]["sha256"]) == photo
    finally:
        await relay.stop()


async def test_staff_reply_reaches_the_client_with_the_recording_notice_first(tmp_path: Path, fake: FakeTelegram) -> None:
    relay = await RelayApp.start(config(tmp_path / "data", fake))
    try:
        fake.user_message(CLIENT_TOKEN, ANN, text="Hello, I have a question about my loan")
        thread = await only_thread(fake)
        await eventually(lambda: topic_texts(fake))
        reply = fake.user_message(STAFF_TOKEN, ALICE, chat_id=STAFF_GROUP, thread=thread, text="Hi Ann, Alice here. Go ahead.")
        await eventually(lambda: client_texts(fake))
        assert client_texts(fake) == [f"{NOTICE}\nHi Ann, Alice here. Go ahead."]
        fake.user_message(STAFF_TOKEN, MALLORY, chat_id=STAFF_GROUP, thread=thread, text="let me answer instead")
        await eventually(lambda: any("not a configured employee" in t for t in topic_texts(fake)))
        fake.user_edit(STAFF_TOKEN, reply, text="Hi Ann, Alice here. Ask away.")
        await eventually(lambda: client_texts(fake) and client_texts(fake)[0].endswith("Ask away."))
        assert client_texts(fake) == [f"{NOTICE}\nHi Ann, Alice here. Ask away."], \
            "an edit changes the client's copy, keeps the notice, and the stranger's text never arrives"
        assert fake.called("editMessageText", CLIENT_TOKEN)
        fake.user_edit(STAFF_TOKEN, reply, text="Pay with card 4111 1111 1111 1111.")
        await eventually(lambda: client_texts(fake)[0].endswith("Pay with card [REDACTED]."))
        assert client_texts(fake) == [f"{NOTICE}\nPay with card [REDACTED]."], \
            "policy runs again on an edit, and the edit keeps the recording notice of the first reply"
    finally:
        await relay.stop()


async def test_start_gets_the_welcome_with_the_recording_notice(tmp_path: Path, fake: FakeTelegram) -> None:
    relay = await RelayApp.start(config(tmp_path / "data", fake, welcome="Welcome to Example Bank."))
    try:
        fake.user_message(CLIENT_TOKEN, ANN, text="/start", entities=[{"type": "bot_command", "offset": 0, "length": 6}])
        await eventually(lambda: client_texts(fake))
        assert client_texts(fake) == [f"{NOTICE}\nWelcome to Example Bank."]
        await eventually(lambda: topic_texts(fake))
        assert topic_texts(fake) == ["/start"], "the employee sees that the client opened the chat"
        fake.user_message(CLIENT_TOKEN, ANN, text="/start")
        fake.user_message(CLIENT_TOKEN, ANN, text="hello again")
        await eventually(lambda: len(topic_texts(fake)) == 3)
        assert len(client_texts(fake)) == 1, "the welcome is sent once per conversation"
    finally:
        await relay.stop()


async def test_a_429_storm_delays_but_loses_and_reorders_nothing(tmp_path: Path, fake: FakeTelegram) -> None:
    fake.inject("429", "createForumTopic", token=STAFF_TOKEN, retry_after=1)
    fake.inject("429", "sendMessage", token=STAFF_TOKEN, retry_after=1, times=2, skip=2)
    fake.inject("500", "sendMessage", token=STAFF_TOKEN, skip=6)
    fake.inject("drop", "sendMessage", token=STAFF_TOKEN, skip=9)
    fake.inject("429", "sendMessage", token=STAFF_TOKEN, retry_after=1, skip=12)
    texts = [f"message {i:02d}" for i in range(20)]
    relay = await RelayApp.start(config(tmp_path / "data", fake))
    try:
        for text in texts:
            fake.user_message(CLIENT_TOKEN, ANN, text=text)
        await eventually(lambda: len(topic_texts(fake)) >= 20, timeout=20)
        assert topic_texts(fake) == texts
        assert [k for _, k in fake.fault_log] == ["429", "429", "429", "500", "drop", "429"]
        rows = await relay.journal.fetchall("SELECT COUNT(*) AS n FROM events WHERE kind = 'delivery.failed' "
                                            "AND json_extract(body_json, '$.permanent') = 0")
        assert rows[0]["n"] == 5, "one event per outage: the two 429s in a row of one message are one outage"
    finally:
        await relay.stop()


async def test_a_restart_mid_stream_loses_and_duplicates_nothing(tmp_path: Path, fake: FakeTelegram) -> None:
    data = tmp_path / "data"
    texts = [f"line {i:02d}" for i in range(30)]
    slow = fake.inject("slow", "sendMessage", token=STAFF_TOKEN, delay=0.1, times=1000)
    relay = await RelayApp.start(config(data, fake))
    try:
        for text in texts[:15]:
            fake.user_message(CLIENT_TOKEN, ANN, text=text)
        await eventually(lambda: len(topic_texts(fake)) >= 3)
    finally:
        await relay.stop()
    stopped_at = len(topic_texts(fake))
    assert stopped_at < 15, "the relay was stopped with deliveries still pending"
    slow.times = 0
    for text in texts[15:]:
        fake.user_message(CLIENT_TOKEN, ANN, text=text)
    relay = await RelayApp.start(config(data, fake))
    try:
        await eventually(lambda: len(topic_texts(fake)) >= 30, timeout=20)
        thread = await only_thread(fake)
        fake.user_message(STAFF_TOKEN, ALICE, chat_id=STAFF_GROUP, thread=thread, text="got all of it")
        await eventually(lambda: client_texts(fake))
        assert topic_texts(fake) == texts, f"stopped after {stopped_at}"
        assert len(fake.called("createForumTopic")) == 1, "the topic map survived the restart"
        rows = await relay.journal.fetchall("SELECT COUNT(*) AS n FROM messages WHERE channel = 'telegram-clients'")
        assert rows[0]["n"] == 30
    finally:
        await relay.stop()


async def test_oversized_file_is_refused_and_the_client_told(tmp_path: Path, fake: FakeTelegram) -> None:
    cfg = config(tmp_path / "data", fake, limits={"max_attachment_bytes": 2000})
    relay = await RelayApp.start(cfg)
    try:
        fake.user_message(CLIENT_TOKEN, ANN, caption="my statement", **fake.document(b"x" * 5000, "statement.pdf", "application/pdf"))
        await eventually(lambda: client_texts(fake))
        assert "statement.pdf" in client_texts(fake)[0]
        await eventually(lambda: topic_texts(fake))
        assert fake.downloads == []
        rows = await relay.journal.fetchall("SELECT attachments_json FROM messages WHERE channel = 'telegram-clients'")
        [att] = json.loads(rows[0]["attachments_json"])
        assert att["refused"] == "too large: 5000 > 2000"
    finally:
        await relay.stop()


async def test_albums_edits_and_files_travel_both_ways(tmp_path: Path, fake: FakeTelegram) -> None:
    scans = [bytes([i]) * (500 + i) for i in range(3)]
    relay = await RelayApp.start(config(tmp_path / "data", fake))
    try:
        parts = [fake.user_message(CLIENT_TOKEN, ANN, media_group_id="alb-1", **({"caption": "my three scans"} if i == 0 else {}),
                                   **fake.photo(data)) for i, data in enumerate(scans)]
        thread = await only_thread(fake)
        await eventually(lambda: len(fake.sent(STAFF_GROUP, thread)) == 3)
        group = fake.sent(STAFF_GROUP, thread)
        assert len({m.get("media_group_id") for m in group}) == 1 and group[0]["caption"] == "my three scans"
        assert [fake.file_bytes(m["photo"][-1]["file_id"]) for m in group] == scans
        fake.user_edit(CLIENT_TOKEN, parts[0], caption="my three scans (signed)")
        await eventually(lambda: fake.sent(STAFF_GROUP, thread)[0].get("caption") == "my three scans (signed)")
        form = b"%PDF-1.7 form to sign"
        fake.user_message(STAFF_TOKEN, ALICE, chat_id=STAFF_GROUP, thread=thread, caption="please sign this",
                          **fake.document(form, "form.pdf", "application/pdf"))
        await eventually(lambda: fake.sent(ANN["id"]))
        [doc] = fake.sent(ANN["id"])
        assert doc["document"]["file_name"] == "form.pdf" and fake.file_bytes(doc["document"]["file_id"]) == form
        assert doc["caption"] == f"{NOTICE}\nplease sign this"
    finally:
        await relay.stop()


async def test_webhook_mode_on_the_relay_web_server(tmp_path: Path, fake: FakeTelegram) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cfg = config(tmp_path / "data", fake, public_url=f"http://127.0.0.1:{port}")
    cfg["listen"]["port"] = port
    cfg["channels"]["telegram-clients"].update(mode="webhook", webhook_secret="e2e-Secret")
    relay = await RelayApp.start(cfg)
    try:
        await eventually(lambda: fake.bots[CLIENT_TOKEN].webhook_url)
        assert fake.bots[CLIENT_TOKEN].webhook_url == f"http://127.0.0.1:{port}/telegram/telegram-clients"
        fake.user_message(CLIENT_TOKEN, ANN, text="card 5500-0000-0000-0004 via webhook")
        await eventually(lambda: topic_texts(fake))
        assert "[REDACTED] via webhook" in topic_texts(fake)[0]
        async with aiohttp.ClientSession() as session:
            forged = {"update_id": 1, "message": {"message_id": 99, "date": 1, "chat": {"id": 1, "type": "private"}, "text": "x"}}
            async with session.post(fake.bots[CLIENT_TOKEN].webhook_url, json=forged,
                                    headers={"X-Telegram-Bot-Api-Secret-Token": "nope"}) as resp:
                assert resp.status == 401
        rows = await relay.journal.fetchall("SELECT COUNT(*) AS n FROM messages WHERE channel = 'telegram-clients'")
        assert rows[0]["n"] == 1
        assert fake.called("getUpdates", CLIENT_TOKEN) == []
    finally:
        await relay.stop()

"""Staff forum topics that go wrong: a deleted topic, a topic relay does not know, a failed
delivery, through a whole relay with both Telegram channels on the fake Bot API."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fake_telegram import FakeTelegram
from relay.app import RelayApp
from relay.config import DEFAULT_NOTICES
from telegram_support import CLIENT_TOKEN, STAFF_GROUP, STAFF_TOKEN, eventually
from test_telegram_e2e import ALICE, ANN, MALLORY, client_texts, config, only_thread

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


def texts(fake: FakeTelegram, thread: int) -> list[str]:
    return [m.get("text", "") for m in fake.sent(STAFF_GROUP, thread)]


async def test_a_deleted_topic_is_opened_anew_with_history_and_the_message_delivered(tmp_path: Path,
                                                                                     fake: FakeTelegram) -> None:
    relay = await RelayApp.start(config(tmp_path / "data", fake))
    try:
        fake.user_message(CLIENT_TOKEN, ANN, text="first question about my loan")
        old = await only_thread(fake)
        await eventually(lambda: texts(fake, old))
        fake.delete_topic(STAFF_GROUP, old)
        fake.user_message(CLIENT_TOKEN, ANN, text="second question, still about the loan")
        new = await eventually(lambda: [t for t in fake.topics[STAFF_GROUP] if t != old])
        [new] = new
        assert fake.topics[STAFF_GROUP][new] == "Ann Lee (telegram-clients)"
        await eventually(lambda: len(texts(fake, new)) >= 2)
        message, history = texts(fake, new)[:2]
        assert message.endswith("second question, still about the loan")
        assert "was deleted" in history and "first question about my loan" in history
        # the employee answers in the new topic and it reaches the client
        fake.user_message(STAFF_TOKEN, ALICE, chat_id=STAFF_GROUP, thread=new, text="Alice here, on it.")
        await eventually(lambda: any("Alice here, on it." in t for t in client_texts(fake)))
        assert not [t for t in client_texts(fake) if "could not be delivered" in t]
        failed = await relay.journal.fetchall(
            "SELECT body_json FROM events WHERE kind = 'delivery.failed'"
            " AND json_extract(body_json, '$.permanent')")
        assert failed == []
    finally:
        await relay.stop()


async def test_an_employee_writing_in_an_unknown_topic_is_told(tmp_path: Path, fake: FakeTelegram) -> None:
    relay = await RelayApp.start(config(tmp_path / "data", fake))
    try:
        lunch = fake.add_topic(STAFF_GROUP, "Lunch plans")
        fake.user_message(STAFF_TOKEN, ALICE, chat_id=STAFF_GROUP, thread=lunch, text="who is answering Ann?")
        fake.user_message(STAFF_TOKEN, MALLORY, chat_id=STAFF_GROUP, thread=lunch, text="me, maybe")
        await eventually(lambda: len(texts(fake, lunch)) == 2)
        assert texts(fake, lunch) == [DEFAULT_NOTICES["unknown_conversation"]] * 2
        rows = await relay.journal.fetchall(
            "SELECT conversation, body_json FROM events WHERE kind = 'message.received' ORDER BY seq")
        bodies = [json.loads(r["body_json"]) for r in rows]
        assert [b["text"] for b in bodies] == ["who is answering Ann?", "me, maybe"]
        assert all(b["refused"].startswith("no conversation") for b in bodies)
        assert [r["conversation"] for r in rows] == [None, None]  # no conversation is made up
        assert await relay.journal.fetchall("SELECT id FROM conversations") == []
    finally:
        await relay.stop()


async def test_a_client_is_never_shown_an_internal_delivery_error(tmp_path: Path, fake: FakeTelegram) -> None:
    fake.block(STAFF_TOKEN, STAFF_GROUP)  # the staff bot was removed from the group
    relay = await RelayApp.start(config(tmp_path / "data", fake))
    try:
        fake.user_message(CLIENT_TOKEN, ANN, text="hello, anyone?")
        await eventually(lambda: client_texts(fake), timeout=10)
        assert client_texts(fake) == [DEFAULT_NOTICES["undeliverable_client"]]
        [row] = await relay.journal.fetchall(
            "SELECT body_json FROM events WHERE kind = 'delivery.failed' AND json_extract(body_json, '$.permanent')")
        assert "Forbidden" in json.loads(row["body_json"])["reason"]  # the journal has the reason
    finally:
        await relay.stop()

"""No message content and no secret in logs, even at DEBUG, through the paths that fail."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bots.telegram import create
from fake_telegram import FakeTelegram
from relay import logs
from relay.journal.writer import Unit
from telegram_support import CLIENT_TOKEN, MemoryState, Recorder, make_ctx
from tests.e2e_support import client_socket, running, web_config
from tests.journal_support import jopen, received  # noqa: F401  (jopen is a fixture)
from tests.test_journal_isolation import _unchecked

CARD = "4111 1111 1111 1111"
TOKEN_SECRET = CLIENT_TOKEN.split(":", 1)[1]
ANN = FakeTelegram.user(4242, "Ann", "Lee")

pytestmark = pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")


@pytest.fixture
def captured(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Logging as `relay run` sets it up at log_level DEBUG, every record captured."""
    saved = {name: logging.getLogger(name).level for name in logs.QUIET_LIBRARIES}
    logs.configure("DEBUG")
    caplog.set_level(logging.DEBUG)
    try:
        yield caplog
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


async def test_writer_failure_is_logged_without_the_content(tmp_path: Path, jopen: Any,
                                                            captured: pytest.LogCaptureFixture) -> None:
    j = await jopen(tmp_path)
    bad: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    good = j.append("admin.action", {"ok": True})
    j._submit(Unit([_unchecked("message.received", received("m-bad", f"card {CARD} \ud800"))], bad))
    await good
    with pytest.raises(Exception):
        await bad
    assert "journal commit of 2 unit(s) failed" in captured.text
    assert CARD not in captured.text and "\ud800" not in captured.text


async def test_hostile_web_chat_text_leaves_no_content_in_logs(tmp_path: Path,
                                                               captured: pytest.LogCaptureFixture) -> None:
    async with running(web_config(tmp_path / "data")) as relay:
        client = await client_socket(relay.base_url, "v1")
        try:
            await client.ws.send_str('{"type":"message","id":"b1","text":"card %s \\ud800"}' % CARD)
            await client.wait_for(lambda f: f.get("id") == "b1" and f.get("type") in ("ack", "error"))
            assert (await client.say("h1", f"my card is {CARD}"))["type"] == "ack"
        finally:
            await client.close()
    assert "relay listening on" in captured.text  # the capture works
    assert CARD not in captured.text


async def test_telegram_failures_log_neither_the_token_nor_the_text(captured: pytest.LogCaptureFixture) -> None:
    fake = FakeTelegram()
    await fake.start()
    try:
        fake.add_bot(CLIENT_TOKEN, "relay_client_bot")
        fake.inject("500", "getMe")
        recorder = Recorder()
        recorder.fail_next = 1
        settings = {"token": CLIENT_TOKEN, "side": "client", "base_url": fake.base_url,
                    "base_file_url": fake.base_file_url, "poll_timeout": 1, "request_timeout": 2, "backoff_max": 0.2}
        channel = create("telegram-clients", settings, make_ctx("telegram-clients", "client", MemoryState()))
        await channel.start(recorder)
        try:
            fake.user_message(CLIENT_TOKEN, ANN, text=f"my card is {CARD}")
            [got] = await recorder.wait_for(1)
            assert CARD in got.text
        finally:
            await channel.stop()
    finally:
        await fake.stop()
    assert "connect failed" in captured.text and "delivering update" in captured.text
    assert CARD not in captured.text
    assert TOKEN_SECRET not in captured.text

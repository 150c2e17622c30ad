"""A relay process with Telegram on both sides, killed with SIGKILL mid-stream, loses and
duplicates nothing: updates not yet journaled come again from getUpdates (the offset had not
passed them), those journaled twice are dropped by the journal, and the outbox resumes.

Staff-side sends fail with 500 until the kill, so no send is in flight when the process dies
(Telegram has no idempotency key; a send the server took but whose answer was never journaled
would be repeated, as with any at-least-once sender).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from fake_telegram import FakeTelegram
from telegram_support import CLIENT_TOKEN, STAFF_GROUP, STAFF_TOKEN, eventually
from tests.e2e_support import ROOT, free_port, start_relay, stop_relay, verify_journal
ANN = FakeTelegram.user(4242, "Ann", "Lee")
TOTAL = 300
KILL_AFTER = 100


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    server = FakeTelegram()
    await server.start()
    server.add_bot(CLIENT_TOKEN, "bank_bot")
    server.add_bot(STAFF_TOKEN, "bank_staff_bot")
    server.add_forum(STAFF_GROUP, "Advisors")
    yield server
    await server.stop()


def _config(data: Path, port: int, fake: FakeTelegram) -> dict[str, Any]:
    common = {"base_url": fake.base_url, "base_file_url": fake.base_file_url, "poll_timeout": 1, "backoff_max": 0.3}
    return {
        "data_dir": str(data),
        "listen": {"host": "127.0.0.1", "port": port},
        "policies": {"dir": str(ROOT / "policies")},
        "outbox": {"base_delay": 0.05, "max_delay": 0.3},
        "channels": {
            "telegram-clients": {"network": "telegram", "side": "client", "token": CLIENT_TOKEN, **common},
            "telegram-staff": {"network": "telegram", "side": "staff", "token": STAFF_TOKEN, "staff_group": STAFF_GROUP, **common},
        },
        "employees": {"alice": {"name": "Alice", "staff": {"channel": "telegram-staff", "address": "9001"}}},
        "desks": {"advisors": {"clients": ["telegram-clients"], "members": ["alice"]}},
    }


def _acknowledged(fake: FakeTelegram, first: int) -> int:
    offsets = [int(c.params["offset"]) for c in fake.called("getUpdates", CLIENT_TOKEN) if c.params.get("offset")]
    return max(offsets, default=first) - first


async def test_kill_9_mid_stream_then_restart_relays_every_message_once_in_order(tmp_path: Path, fake: FakeTelegram) -> None:
    port = free_port()
    cfg_path = tmp_path / "relay.yaml"
    cfg_path.write_text(yaml.safe_dump(_config(tmp_path / "data", port, fake)))
    log = tmp_path / "relay.log"
    blocked = [fake.inject("500", method, token=STAFF_TOKEN, times=10**6) for method in ("sendMessage", "createForumTopic")]
    texts = [f"message {i:03d}" for i in range(TOTAL)]
    first = fake.bots[CLIENT_TOKEN].next_update_id
    for text in texts:
        fake.user_message(CLIENT_TOKEN, ANN, text=text)

    proc = await start_relay(cfg_path, f"http://127.0.0.1:{port}", log)
    await eventually(lambda: _acknowledged(fake, first) >= KILL_AFTER, timeout=30)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert _acknowledged(fake, first) < TOTAL, "the kill came too late to test anything"
    assert fake.sent(STAFF_GROUP) == []
    # A request the killed process sent just before dying may still be in the fake's handler;
    # let it meet the fault too, or it would create a topic nobody gets the answer of (what
    # Telegram would do with a request whose sender died: the Bot API has no idempotency key).
    await asyncio.sleep(0.5)
    assert fake.sent(STAFF_GROUP) == [] and not fake.topics[STAFF_GROUP]
    for fault in blocked:
        fault.times = 0

    proc = await start_relay(cfg_path, f"http://127.0.0.1:{port}", log)
    try:
        await eventually(lambda: len(fake.sent(STAFF_GROUP)) >= TOTAL, timeout=60)
        await asyncio.sleep(0.5)
        [thread] = fake.topics[STAFF_GROUP]
        assert [m["text"] for m in fake.sent(STAFF_GROUP, thread)] == texts
    finally:
        stop_relay(proc)
    verify = verify_journal(cfg_path)
    assert verify.returncode == 0, verify.stdout + verify.stderr

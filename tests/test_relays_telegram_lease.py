"""Telegram in polling mode is connection-held (one getUpdates poller per bot): with two relays
on one PostgreSQL journal only the lease holder polls; when it dies the other takes over and
the messages keep arriving once each, in order."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from fake_telegram import FakeTelegram
from relay.app import RelayApp
from telegram_support import CLIENT_TOKEN, STAFF_TOKEN, eventually
from tests.pg_support import PgServer, pg_server, pg_url, sql  # noqa: F401  (fixtures)
from tests.test_telegram_e2e import ANN, config, fake, topic_texts  # noqa: F401  (fake is a fixture)

pytestmark = pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")
LEASE = 1.0


def shared(data: Path, fake: FakeTelegram, url: str) -> dict[str, Any]:
    return config(data, fake, journal={"url": url, "lease_seconds": LEASE, "checkpoint_seconds": 3600})


def polling(relay: RelayApp) -> set[str]:
    return set(relay.leases.running) if relay.leases is not None else set()


async def test_only_the_lease_holder_polls_telegram_and_the_other_takes_over_when_it_dies(
    tmp_path: Path, fake: FakeTelegram, pg_url: str
) -> None:
    a = await RelayApp.start(shared(tmp_path / "a", fake, pg_url))
    b: RelayApp | None = None
    try:
        assert a.channels["telegram-clients"].exclusive and a.channels["telegram-staff"].exclusive
        b = await RelayApp.start(shared(tmp_path / "b", fake, pg_url))
        assert polling(a) == {"telegram-clients", "telegram-staff"} and polling(b) == set()
        before = len(fake.called("getUpdates", token=CLIENT_TOKEN))
        for i in range(5):
            fake.user_message(CLIENT_TOKEN, ANN, text=f"line {i}")
        await eventually(lambda: len(topic_texts(fake)) >= 5, timeout=20)
        await asyncio.sleep(3 * LEASE)
        assert polling(b) == set()  # A renews its leases: B never polls
        assert len(fake.called("getUpdates", token=CLIENT_TOKEN)) > before

        for task in a._tasks:  # A dies: no lease renewals, no heartbeats, its pollers gone
            task.cancel()
        a.journal._heartbeat_task.cancel()  # type: ignore[attr-defined]
        for name in ("telegram-clients", "telegram-staff"):
            await a.channels[name].stop()
        await eventually(lambda: polling(b) == {"telegram-clients", "telegram-staff"}, timeout=10 * LEASE)
        for i in range(5, 10):
            fake.user_message(CLIENT_TOKEN, ANN, text=f"line {i}")
        await eventually(lambda: len(topic_texts(fake)) >= 10, timeout=20)
        await asyncio.sleep(0.5)
        assert topic_texts(fake) == [f"line {i}" for i in range(10)]
        owners = await sql(pg_url, "SELECT name, owner FROM leases ORDER BY name")
        assert [(r["name"], r["owner"]) for r in owners] == [
            ("channel:telegram-clients", b.journal.relay_id), ("channel:telegram-staff", b.journal.relay_id)]  # type: ignore[attr-defined]
        assert len(fake.called("sendMessage", token=STAFF_TOKEN)) >= 10
    finally:
        if b is not None:
            await b.stop()
        await a.stop()

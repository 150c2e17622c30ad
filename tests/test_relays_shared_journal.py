"""Two relays on one PostgreSQL journal (in one test process, each with its own in-memory
channels): a live relay's queued deliveries are its own; when it stops heartbeating, the other
claims them and sends each once, in order."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from bots.memory.channel import MemoryChannel
from relay.app import RelayApp
from tests.pg_support import PgServer, drop_database, new_database, pg_server, sql  # noqa: F401  (pg_server is a fixture)
from tests.test_hub_pipeline import memory_config

LEASE = 1.0


@pytest.fixture
async def url(pg_server: PgServer) -> Any:
    u = await new_database(pg_server)
    yield u
    await drop_database(u)


async def until(pred: Any, timeout: float = 20.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if await pred() if asyncio.iscoroutinefunction(pred) else pred():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached")


async def start(data: Path, url: str) -> RelayApp:
    return await RelayApp.start(memory_config(data, members=("ann",), journal={"url": url, "lease_seconds": LEASE}))


async def test_a_live_relays_deliveries_stay_its_own_and_are_taken_over_once_when_it_dies(
    url: str, tmp_path: Path
) -> None:
    a = await start(tmp_path / "a", url)
    b: RelayApp | None = None
    try:
        a_clients: MemoryChannel = a.channels["clients"]  # type: ignore[assignment]
        a_staff: MemoryChannel = a.channels["staff"]  # type: ignore[assignment]
        a_staff.online = False  # A's employee side is unreachable: its deliveries wait in A's outbox
        for i in range(5):
            await a_clients.inject("u1", f"m{i}", f"u1:{i}")

        async def queued_by_a() -> bool:
            rows = await sql(url, "SELECT owner FROM deliveries WHERE state='queued'")
            return len(rows) == 5 and {r["owner"] for r in rows} == {a.journal.relay_id}  # type: ignore[attr-defined]

        await until(queued_by_a)
        b = await start(tmp_path / "b", url)
        b_staff: MemoryChannel = b.channels["staff"]  # type: ignore[assignment]
        assert b.journal.relay_id != a.journal.relay_id  # type: ignore[attr-defined]
        assert b.outbox.pending == 0  # A is alive: B resumed nothing of A's
        await asyncio.sleep(3 * LEASE)
        assert b_staff.sent == [] and b.outbox.pending == 0

        # A dies without a word: no more heartbeats, its outbox gone (as kill -9 leaves it)
        a.journal._heartbeat_task.cancel()  # type: ignore[attr-defined]
        await a.outbox.stop()
        await until(lambda: len(b_staff.sent) == 5)
        assert [o.text for o in b_staff.sent] == [f"m{i}" for i in range(5)]
        assert a_staff.sent == []

        async def all_delivered_by_b() -> bool:
            rows = await sql(url, "SELECT state, owner FROM deliveries")
            return {(r["state"], r["owner"]) for r in rows} == {("delivered", b.journal.relay_id)}  # type: ignore[union-attr]

        await until(all_delivered_by_b)
        delivered = await sql(url, "SELECT count(*) FROM events WHERE kind='message.delivered'")
        assert delivered[0][0] == 5
        assert (await b.journal.verify()).ok
    finally:
        if b is not None:
            await b.stop()
        await a.stop()


async def test_a_connection_held_channel_runs_on_one_relay_and_moves_when_that_relay_dies(
    url: str, tmp_path: Path
) -> None:
    def config(data: Path) -> dict[str, Any]:
        cfg = memory_config(data, members=("ann",), journal={"url": url, "lease_seconds": LEASE})
        cfg["channels"]["clients"]["exclusive"] = True
        return cfg

    a = await RelayApp.start(config(tmp_path / "a"))
    b: RelayApp | None = None
    try:
        running = lambda relay: relay.channels["clients"]._deliver is not None  # noqa: E731
        assert running(a)
        b = await RelayApp.start(config(tmp_path / "b"))
        assert not running(b)
        await asyncio.sleep(3 * LEASE)
        assert running(a) and not running(b)  # renewed by A, so B keeps waiting
        assert b.channels["staff"]._deliver is not None  # channels without a lease run everywhere

        for task in a._tasks:  # A dies: no lease renewals, no heartbeats
            task.cancel()
        a.journal._heartbeat_task.cancel()  # type: ignore[attr-defined]
        await until(lambda: running(b), timeout=10 * LEASE)
        b_clients: MemoryChannel = b.channels["clients"]  # type: ignore[assignment]
        b_staff: MemoryChannel = b.channels["staff"]  # type: ignore[assignment]
        await b_clients.inject("u7", "hello after the move", "u7:1")
        await until(lambda: [o.text for o in b_staff.sent] == ["hello after the move"])
        owners = await sql(url, "SELECT owner FROM leases WHERE name='channel:clients'")
        assert [r["owner"] for r in owners] == [b.journal.relay_id]  # type: ignore[attr-defined]
    finally:
        if b is not None:
            await b.stop()
        await a.stop()
    assert await sql(url, "SELECT owner FROM leases") == []  # released on a clean stop


async def test_deliveries_to_a_connection_held_channel_are_sent_by_the_relay_holding_it(
    url: str, tmp_path: Path
) -> None:
    """A holds the staff channel: a client message arriving at B is sent by A, never by B; once
    A dies, B takes the channel and sends what A left waiting and what comes next."""
    def config(data: Path) -> dict[str, Any]:
        cfg = memory_config(data, members=("ann",), journal={"url": url, "lease_seconds": LEASE})
        cfg["channels"]["staff"]["exclusive"] = True
        return cfg

    a = await RelayApp.start(config(tmp_path / "a"))
    b: RelayApp | None = None
    try:
        b = await RelayApp.start(config(tmp_path / "b"))
        a_staff: MemoryChannel = a.channels["staff"]  # type: ignore[assignment]
        b_staff: MemoryChannel = b.channels["staff"]  # type: ignore[assignment]
        b_clients: MemoryChannel = b.channels["clients"]  # type: ignore[assignment]
        for i in range(3):
            await b_clients.inject("u1", f"via b {i}", f"u1:{i}")
        await until(lambda: len(a_staff.sent) == 3)
        assert [o.text for o in a_staff.sent] == [f"via b {i}" for i in range(3)] and b_staff.sent == []

        a_staff.online = False  # A cannot reach its employees, then dies
        await b_clients.inject("u1", "left waiting", "u1:3")

        async def owned_by_a() -> bool:
            rows = await sql(url, "SELECT owner FROM deliveries WHERE state='queued'")
            return [r["owner"] for r in rows] == [a.journal.relay_id]  # type: ignore[attr-defined]

        await until(owned_by_a)
        for task in a._tasks:
            task.cancel()
        a.journal._heartbeat_task.cancel()  # type: ignore[attr-defined]
        await a.outbox.stop()
        await until(lambda: [o.text for o in b_staff.sent] == ["left waiting"], timeout=10 * LEASE)
        await b_clients.inject("u1", "after the move", "u1:4")
        await until(lambda: [o.text for o in b_staff.sent] == ["left waiting", "after the move"])
        assert len(a_staff.sent) == 3
        counts = await sql(url, "SELECT count(*) FROM events WHERE kind='message.delivered'")
        assert counts[0][0] == 5
    finally:
        if b is not None:
            await b.stop()
        await a.stop()


async def test_a_database_restart_while_messages_flow_loses_nothing(
    url: str, tmp_path: Path, pg_server: PgServer
) -> None:
    """Clients keep writing while PostgreSQL restarts (as abruptly as a crash): the relay's
    appends wait and resume, every message reaches the desk once and in order."""
    relay = await start(tmp_path / "a", url)
    try:
        clients: MemoryChannel = relay.channels["clients"]  # type: ignore[assignment]
        staff: MemoryChannel = relay.channels["staff"]  # type: ignore[assignment]

        async def client(u: int) -> None:
            for i in range(40):
                await clients.inject(f"u{u}", f"u{u} m{i}", f"u{u}:{i}")
                await asyncio.sleep(0.005)

        writers = asyncio.gather(*(client(u) for u in range(5)))
        await until(lambda: len(staff.sent) >= 20)
        await asyncio.to_thread(pg_server.restart, "immediate")
        await asyncio.wait_for(writers, 120)
        await until(lambda: len(staff.sent) >= 200, timeout=60)
        await asyncio.sleep(0.5)
        texts = [o.text for o in staff.sent]
        assert len(texts) == len(set(texts)) == 200
        for u in range(5):
            mine = [t for t in texts if t.startswith(f"u{u} ")]
            assert mine == [f"u{u} m{i}" for i in range(40)]
        rows = await sql(url, "SELECT count(*) FROM events WHERE kind='message.received'")
        assert rows[0][0] == 200
        assert (await relay.journal.verify()).ok
        assert relay.journal.reconnects >= 1  # type: ignore[attr-defined]  # the restart was lived through
    finally:
        await relay.stop()

"""Journal appends on PostgreSQL (`synchronous_commit=on`, fsync on) vs SQLite `synchronous=FULL`.

The workload is bench_journal's: producers each playing one conversation as the hub writes it,
every event awaited before the next, so each is acknowledged only after its own commit; group
commit on both backends. Also two PgJournal writers on one database (two relays sharing one
chain, serialised by the chain-head row lock) against one. Then end to end: the same messages
through one `RelayApp` (in-memory channels, shipped policies) against two, each in its own
process, on one database. The server is Debian's PostgreSQL in a temp cluster on loopback,
started here (with fsync on, unlike the tests' one), sharing the machine's cores.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.bench_journal import _bodies
from relay.journal import Journal
from relay.journal.pg import PgJournal
from tests.pg_support import PgServer

PRODUCERS = 200
EVENTS = 10_000
RUNS = 3
MESSAGES = 2_000
CLIENTS = 100


async def _run(url: str | None, events: int, writers: int = 1) -> tuple[float, int]:
    """Events per second and commits, on a fresh journal (a new database schema on PostgreSQL)."""
    per_producer = events // PRODUCERS
    work = [_bodies(p, per_producer) for p in range(PRODUCERS)]
    with tempfile.TemporaryDirectory(prefix="bench-pg-") as tmp:
        if url is None:
            journals = [await Journal.open(Path(tmp), synchronous="FULL", checkpoint_every=100_000)]
        else:
            journals = [await PgJournal.open(url, data_dir=Path(tmp) / f"w{i}", checkpoint_every=100_000)
                        for i in range(writers)]

        async def producer(p: int) -> None:
            journal = journals[p % len(journals)]
            for kind, body in work[p]:
                await journal.append(kind, body, f"c-{p}")

        start = time.perf_counter()
        await asyncio.gather(*(producer(p) for p in range(PRODUCERS)))
        elapsed = time.perf_counter() - start
        commits = sum(j.stats.commits for j in journals)
        for j in journals:
            await j.close()
    return per_producer * PRODUCERS / elapsed, commits


async def _fresh(server: PgServer, n: int) -> str:
    import asyncpg

    conn = await asyncpg.connect(server.url())
    try:
        await conn.execute(f"CREATE DATABASE bench{n}")
    finally:
        await conn.close()
    return server.url(f"bench{n}")


def _relay_process(url: str, data_dir: str, n: int, offset: int, barrier: Any, out: Any) -> None:
    """One relay pushing `n` client messages through to its staff side, after the barrier."""
    from bench.bench_e2e import TEXT, _wait_for, bench_config
    from relay.app import RelayApp

    async def go() -> tuple[int, float, float]:
        cfg = bench_config(Path(data_dir))
        cfg["journal"] = {"url": url, "checkpoint_every": 100_000}
        relay = await RelayApp.start(cfg)
        try:
            src = relay.channels["clients"]
            dst = relay.channels["staff"]
            per = n // CLIENTS
            await asyncio.to_thread(barrier.wait)
            t0 = time.time()

            async def client(c: int) -> None:
                for i in range(per):
                    await src.inject(f"u{offset + c}", TEXT, f"{offset + c}:{i}")  # type: ignore[attr-defined]

            await asyncio.gather(*(client(c) for c in range(CLIENTS)))
            await _wait_for(dst, per * CLIENTS)  # type: ignore[arg-type]
            return per * CLIENTS, t0, time.time()
        finally:
            await relay.stop()

    out.put(asyncio.run(go()))


def _e2e(server: PgServer, n_db: int, relays: int) -> float:
    """Messages/s through `relays` relay processes sharing one fresh database (same total)."""
    url = asyncio.run(_fresh(server, n_db))
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(relays), ctx.Queue()
    with tempfile.TemporaryDirectory(prefix="bench-pg-e2e-") as tmp:
        procs = [ctx.Process(target=_relay_process, args=(url, f"{tmp}/r{i}", MESSAGES // relays, i * 10_000,
                                                           barrier, out)) for i in range(relays)]
        for p in procs:
            p.start()
        results = [out.get(timeout=600) for _ in procs]
        for p in procs:
            p.join()
    total = sum(r[0] for r in results)
    return total / (max(r[2] for r in results) - min(r[1] for r in results))


def main() -> None:
    server = PgServer(fsync=True)
    try:
        server.start()
        pg: list[tuple[float, int]] = []
        pg2: list[tuple[float, int]] = []
        lite: list[tuple[float, int]] = []
        n = 0
        for _ in range(RUNS):  # interleaved, so all see the same disk and CPU conditions
            lite.append(asyncio.run(_run(None, EVENTS)))
            n += 1
            pg.append(asyncio.run(_run(asyncio.run(_fresh(server, n)), EVENTS)))
            n += 1
            pg2.append(asyncio.run(_run(asyncio.run(_fresh(server, n)), EVENTS, writers=2)))
        s = statistics.median(r for r, _ in lite)
        p = statistics.median(r for r, _ in pg)
        p2 = statistics.median(r for r, _ in pg2)
        per_commit = EVENTS / statistics.median(c for _, c in pg)
        print(
            f"postgres: {p:.0f} ev/s PostgreSQL (synchronous_commit=on, ~{per_commit:.0f} events per commit) vs "
            f"{s:.0f} ev/s SQLite FULL: ratio {p / s:.2f}x; two writers on one chain {p2:.0f} ev/s, "
            f"ratio {p2 / p:.2f}x one writer ({EVENTS} events, {PRODUCERS} producers, median of {RUNS}, "
            f"{os.cpu_count()} cores shared with the server)"
        )
        sys.stdout.flush()
        one: list[float] = []
        two: list[float] = []
        for _ in range(RUNS):
            n += 1
            one.append(_e2e(server, n, 1))
            n += 1
            two.append(_e2e(server, n, 2))
        o, t = statistics.median(one), statistics.median(two)
        print(
            f"postgres e2e: two relays {t:.0f} msg/s vs one relay {o:.0f} msg/s: ratio {t / o:.2f}x (target 1.5x; "
            f"{MESSAGES} messages, {CLIENTS} clients per relay, median of {RUNS}, {os.cpu_count()} cores shared by "
            "the relays, the server and the rest of the machine)"
        )
        sys.stdout.flush()
    finally:
        server.cleanup()


if __name__ == "__main__":
    main()

"""Journal appends on PostgreSQL (`synchronous_commit=on`, fsync on) vs SQLite `synchronous=FULL`.

The workload is bench_journal's: producers each playing one conversation as the hub writes it,
every event awaited before the next, so each is acknowledged only after its own commit; group
commit on both backends. Also two PgJournal writers on one database (two relays sharing one
chain, serialised by the chain-head row lock) against one. The server is Debian's PostgreSQL in
a temp cluster on loopback, started here (with fsync on, unlike the tests' one).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.bench_journal import _bodies
from relay.journal import Journal
from relay.journal.pg import PgJournal
from tests.pg_support import PgServer

PRODUCERS = 200
EVENTS = 10_000
RUNS = 3


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
    finally:
        server.cleanup()


if __name__ == "__main__":
    main()

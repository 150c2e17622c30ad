"""Journal verify: full and incremental against the re-encoding verifier it replaced.

The baseline reads the same rows the same way (chunks of 2000 on a read-only connection,
checked in a worker thread) and does per row what `verify` did before: parse the body and
re-encode the whole event to hash it. `verify --full` hashes the stored canonical text and
parses only bodies whose content matters. The incremental run checks what came after the
last recorded checkpoint: 1% of the journal here.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiosqlite

from bench.bench_journal import _bodies
from relay.journal import Journal
from relay.journal.chain import GENESIS, event_canonical, event_hash

EVENTS = 60_000
INCREMENT = 600
RUNS = 3


def _hub_like(body: dict[str, Any]) -> dict[str, Any]:
    """As the hub writes small raw payloads: inline, with their digest, no blob."""
    if "raw_sha256" in body:
        body = dict(body)
        del body["raw_sha256"]
        body["raw_inline"] = "eyJ1cGRhdGVfaWQiOiAxMjM0NTY3ODl9" * 4
        body["raw_digest"] = "ef" * 32
    return body


async def _build(data: Path, events: int) -> None:
    journal = await Journal.open(data, synchronous="OFF")
    work = _bodies(0, events)
    for i in range(0, len(work), 1000):
        await journal.append_many([(kind, _hub_like(body), f"c-{(i // 4) % 50}") for kind, body in work[i:i + 1000]])
    await journal.close()


def _reference(rows: list[tuple[Any, ...]], state: list[Any]) -> None:
    prev_seq, prev_hash = state
    for seq, ts, kind, conversation, body_json, prev, hash_ in rows:
        assert seq == prev_seq + 1 and prev == prev_hash
        body = json.loads(body_json)
        assert event_hash(prev, event_canonical(seq, ts, kind, conversation, body), None) == hash_
        prev_seq, prev_hash = seq, hash_
    state[:] = [prev_seq, prev_hash]


async def _baseline(data: Path) -> float:
    start = time.perf_counter()
    async with aiosqlite.connect(f"file:{data / 'journal.sqlite3'}?mode=ro", uri=True) as db:
        cursor = await db.execute("SELECT seq, ts, kind, conversation, body_json, prev_hash, hash FROM events ORDER BY seq")
        state: list[Any] = [0, GENESIS]
        while rows := await cursor.fetchmany(2000):
            await asyncio.to_thread(_reference, rows, state)
    return time.perf_counter() - start


async def _verify(data: Path, full: bool) -> tuple[float, int]:
    journal = await Journal.open(data, read_only=True)
    try:
        start = time.perf_counter()
        report = await journal.verify_recorded(full=full)
        elapsed = time.perf_counter() - start
    finally:
        await journal.close()
    assert report.ok, report.line()
    return elapsed, report.count


async def _run() -> tuple[list[float], list[float], list[float], int, int]:
    base, full, inc = [], [], []
    with tempfile.TemporaryDirectory(prefix="bench-verify-") as tmp:
        data = Path(tmp)
        await _build(data, EVENTS)
        total = 0
        for _ in range(RUNS):  # interleaved: both see the same machine load
            base.append(await _baseline(data))
            t, total = await _verify(data, True)
            full.append(t)
        for _ in range(RUNS):
            journal = await Journal.open(data, synchronous="OFF")
            await journal.append_many([(k, _hub_like(b), "c-x") for k, b in _bodies(1, INCREMENT)])
            await journal.close()
            t, count = await _verify(data, False)
            inc.append(t)
    return base, full, inc, total, count


def main() -> None:
    base, full, inc, total, count = asyncio.run(_run())
    b, f, i = statistics.median(base), statistics.median(full), statistics.median(inc)
    print(
        f"verify: full {total / f:.0f} ev/s vs re-encoding baseline {total / b:.0f} ev/s, ratio {b / f:.2f}x "
        f"({total} events, median of {RUNS}); incremental {count} new events in {i * 1000:.0f} ms "
        f"({f / i:.0f}x faster than full)"
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()

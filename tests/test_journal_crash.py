"""SIGKILL in the middle of appending: every event reported as committed survives, and the chain verifies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.journal_support import REPO, jopen  # noqa: F401  (jopen is a fixture)

CHILD = r"""
import asyncio, sys
from pathlib import Path
from relay.journal import Journal

async def producer(j, n):
    i = 0
    while True:
        i += 1
        body = {"producer": n, "i": i, "text": "x" * (i % 50)}
        if i % 7 == 0:
            body["raw_sha256"] = await j.put_blob(f"raw {n} {i}".encode())
        ev = await j.append("message.received", dict(body, id=f"m-{n}-{i}"), f"c-{n}")
        sys.stdout.write(f"{ev.seq} {ev.hash}\n")
        sys.stdout.flush()

async def main():
    j = await Journal.open(Path(sys.argv[1]), checkpoint_every=40)
    await asyncio.gather(*(producer(j, n) for n in range(8)))

asyncio.run(main())
"""


async def test_sigkill_loses_nothing_that_was_acknowledged(tmp_path: Path, jopen: Any) -> None:
    data = tmp_path / "data"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(data)],
        cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    acked: list[tuple[int, str]] = []
    try:
        assert child.stdout is not None
        for line in child.stdout:
            seq, hash_ = line.split()
            acked.append((int(seq), hash_))
            if len(acked) >= 600:
                break
        os.kill(child.pid, signal.SIGKILL)
        for line in child.stdout:  # lines already written before the kill also count as acked
            parts = line.split()
            if len(parts) == 2:
                acked.append((int(parts[0]), parts[1]))
    finally:
        child.kill()
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    assert len(acked) >= 600, child.stderr.read() if child.stderr else ""

    j = await jopen(data)
    report = await j.verify()
    assert report.ok, report
    stored = {r[0]: r[1] for r in await j.fetchall("SELECT seq, hash FROM events")}
    missing = [(s, h) for s, h in acked if stored.get(s) != h]
    assert missing == []
    assert report.head >= max(s for s, _ in acked)
    nxt = await j.append("admin.action", {"after": "crash"})
    assert nxt.seq == report.head + 1
    await j.close()
    assert (await (await jopen(data, read_only=True)).verify()).ok

"""`relay journal migrate --from sqlite:PATH --to postgresql://…`: chain intact, verify passes on
the target, progress, resumable; a tampered source row is refused before anything is copied."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from relay.journal import JournalError
from relay.journal.migrate import migrate
from relay.journal.pg import PgJournal
from tests.journal_support import REPO, jopen, queued, received, rows, tamper, verdict  # noqa: F401  (jopen is a fixture)
from tests.pg_support import PgServer, drop_database, new_database, pg_server, sql  # noqa: F401  (pg_server is a fixture)


@pytest.fixture
async def url(pg_server: PgServer) -> Any:
    u = await new_database(pg_server)
    yield u
    await drop_database(u)


async def make(data: Path, jopen: Any, n: int = 30) -> None:
    """Messages with raw blobs, verdicts (one for review), deliveries, checkpoints, adapter state,
    and one erased blob (gone from the source, as retention leaves it)."""
    j = await jopen(data, checkpoint_every=20)
    shas = []
    for i in range(n):
        sha = await j.put_blob(f"raw {i}".encode())
        shas.append(sha)
        await j.append("message.received", received(f"m{i}", f"消息 message {i}", raw_sha256=sha), f"c-{i % 3}")
        await j.append("policy.verdict", verdict(f"m{i}", "quarantine" if i == 4 else "allow", review=i == 4), f"c-{i % 3}")
        await j.append("delivery.queued", queued(f"d{i}", f"m{i}"), f"c-{i % 3}")
    await j.append("retention.erased", {"seqs": [], "blobs": [shas[0]], "reason": "retention", "actor": "system"})
    await j.kv_put("telegram", "offset", "42")
    await j.close()
    (data / "blobs" / shas[0][:2] / shas[0]).unlink()


def relay(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "relay.cli", "journal", *args], cwd=REPO,
                          env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True, timeout=300)


async def test_migrate_copies_the_chain_and_the_target_verifies(tmp_path: Path, jopen: Any, url: str) -> None:
    data = tmp_path / "data"
    await make(data, jopen)
    done = relay("migrate", "--from", f"sqlite:{data}", "--to", url, "--data-dir", str(data), "--chunk", "25",
                 "--progress", "25")
    assert done.returncode == 0, done.stderr
    head = rows(data / "journal.sqlite3", "SELECT max(seq), count(*) FROM events")[0]
    assert f"copied {head[1]} events" in done.stdout and "target verify: ok" in done.stdout
    assert done.stderr.count("relay: migrate: ") >= 3 and f"{head[0]}/{head[0]} events" in done.stderr
    source = rows(data / "journal.sqlite3", "SELECT seq, ts, kind, conversation, body_json, prev_hash, hash FROM events ORDER BY seq")
    target = [tuple(r) for r in await sql(url, "SELECT seq, ts, kind, conversation, body_json, prev_hash, hash FROM events ORDER BY seq")]
    assert target == source
    for table, cols in (("messages", "id, seq, conversation, text, action"), ("deliveries", "delivery_id, state, to_json"),
                        ("review_queue", "message_id, state")):
        assert [tuple(r) for r in await sql(url, f"SELECT {cols} FROM {table} ORDER BY 1")] == rows(
            data / "journal.sqlite3", f"SELECT {cols} FROM {table} ORDER BY 1")
    assert (await sql(url, "SELECT value FROM kv WHERE namespace='telegram' AND key='offset'"))[0][0] == "42"
    # the relay carries on on the target: same chain, its own key beside the source's
    j = await PgJournal.open(url, data_dir=tmp_path / "relay-b")
    try:
        nxt = await j.append("admin.action", {"after": "migration"})
        assert nxt.seq == head[0] + 1 and nxt.prev_hash == source[-1][6]
        assert (await j.verify()).ok
    finally:
        await j.close()


async def test_an_interrupted_migration_resumes_where_the_target_stopped(tmp_path: Path, jopen: Any, url: str) -> None:
    data = tmp_path / "data"
    await make(data, jopen)
    seen: list[int] = []

    def stop_after_two_chunks(done: int, total: int) -> None:
        seen.append(done)
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        await migrate(data, url, chunk=10, progress=stop_after_two_chunks)
    assert (await sql(url, "SELECT seq FROM chain_head"))[0][0] == 20
    report = await migrate(data, url, chunk=10)
    total = rows(data / "journal.sqlite3", "SELECT count(*) FROM events")[0][0]
    assert (report.resumed_from, report.copied, report.head) == (20, total - 20, total)
    assert (await sql(url, "SELECT count(*) FROM events"))[0][0] == total
    j = await PgJournal.open(url, data_dir=data, read_only=True)
    try:
        check = await j.verify()
        assert check.ok and check.count == total
    finally:
        await j.close()
    again = await migrate(data, url)  # nothing left to do
    assert (again.copied, again.head) == (0, total)


async def test_a_tampered_source_row_is_refused_and_nothing_is_copied(tmp_path: Path, jopen: Any, url: str) -> None:
    data = tmp_path / "data"
    await make(data, jopen, n=5)
    body = json.loads(rows(data / "journal.sqlite3", "SELECT body_json FROM events WHERE seq=4")[0][0])
    body["text"] = "I never said that"
    tamper(data / "journal.sqlite3", f"UPDATE events SET body_json='{json.dumps(body)}' WHERE seq=4")
    done = relay("migrate", "--from", f"sqlite:{data}", "--to", url, "--data-dir", str(data))
    assert done.returncode != 0
    assert "does not verify: seq 4: hash mismatch" in done.stderr and "nothing copied" in done.stderr
    assert await sql(url, "SELECT to_regclass('events')") == [(None,)]


async def test_a_target_holding_another_chain_is_refused(tmp_path: Path, jopen: Any, url: str) -> None:
    await make(tmp_path / "a", jopen, n=3)
    await make(tmp_path / "b", jopen, n=3)
    await migrate(tmp_path / "a", url)
    with pytest.raises(JournalError, match="different chain"):
        await migrate(tmp_path / "b", url)
    with pytest.raises(JournalError, match="sqlite:PATH"):
        from relay.journal.migrate import source_dir

        source_dir(str(tmp_path / "a"))

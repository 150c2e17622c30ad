"""The WORM copy in a second directory: in order and resumable, checked against the journal, and a
journal restored from it verifies."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from relay.journal import Journal, replica, signing
from relay.journal.replica import DirectoryTarget, ReplicaError
from tests.journal_support import received, rows, tamper

ROOT = Path(__file__).resolve().parents[1]


async def grow(data: Path, start: int, n: int) -> None:
    """`n` messages, every other one with a raw blob and an attachment; a checkpoint every 7 events."""
    j = await Journal.open(data, checkpoint_every=7)
    try:
        for i in range(start, start + n):
            raw = await j.put_blob(f"raw {i}".encode()) if i % 2 else None
            atts = []
            if i % 2:
                sha = await j.put_blob(f"attachment {i}".encode() * 10)
                atts = [{"name": f"f{i}.txt", "mime": "text/plain", "size": 130, "sha256": sha, "platform_ref": "", "refused": ""}]
            await j.append("message.received", received(f"m{i}", f"text {i}", raw_sha256=raw, attachments=atts), f"c-{i % 3}")
    finally:
        await j.close()


async def sync(data: Path, target: DirectoryTarget, batch: int = replica.BATCH) -> replica.SyncResult:
    j = await Journal.open(data, read_only=True)
    try:
        return await replica.sync(j, target, batch)
    finally:
        await j.close()


def public(data: Path) -> str | None:
    return signing.load_public(data / "keys")


async def check(data: Path, target: DirectoryTarget) -> Any:
    return await replica.verify_copy(target, None, data / "journal.sqlite3", public(data))


async def test_copy_in_order_resumes_and_agrees(tmp_path: Path) -> None:
    data, copy = tmp_path / "data", DirectoryTarget(tmp_path / "copy")
    await grow(data, 0, 20)
    first = await sync(data, copy, batch=8)
    head = rows(data / "journal.sqlite3", "SELECT MAX(seq) FROM events")[0][0]
    assert first.head == head and first.copied_events == head and first.copied_blobs == 20
    segs = replica.segments(copy)
    assert [s[0] for s in segs] == [1, 9, 17][: len(segs)] and segs[-1][1] == head
    seg_file = tmp_path / "copy" / segs[0][2]
    assert stat.S_IMODE(os.stat(seg_file).st_mode) == 0o400
    assert json.loads(seg_file.read_text().splitlines()[0])["seq"] == 1
    assert (await sync(data, copy)).copied_events == 0          # nothing new: nothing copied
    await grow(data, 20, 5)
    again = await sync(data, copy)
    assert again.copied_events == rows(data / "journal.sqlite3", "SELECT MAX(seq) FROM events")[0][0] - head
    report = await check(data, copy)
    assert report.ok, report.line()
    cps = rows(data / "journal.sqlite3", "SELECT seq FROM events WHERE kind='checkpoint'")
    assert len(copy.list("checkpoints")) == len(cps) > 2


async def test_a_crash_mid_batch_repeats_it_without_overwriting(tmp_path: Path) -> None:
    data, copy = tmp_path / "data", DirectoryTarget(tmp_path / "copy")
    await grow(data, 0, 10)
    await sync(data, copy, batch=6)
    last = replica.segments(copy)[-1][2]
    (tmp_path / "copy" / last).chmod(0o600)
    (tmp_path / "copy" / last).unlink()                          # as if the run died before the last segment
    assert (await sync(data, copy, batch=6)).copied_events > 0   # the batch again: its blobs are the same bytes
    assert (await check(data, copy)).ok
    with pytest.raises(ReplicaError, match="exists with other content"):
        copy.put(replica.segments(copy)[0][2], b"something else")


async def test_verify_replica_catches_a_journal_rewritten_or_cut(tmp_path: Path) -> None:
    data, copy = tmp_path / "data", DirectoryTarget(tmp_path / "copy")
    await grow(data, 0, 12)
    await sync(data, copy)
    saved = tmp_path / "saved"
    shutil.copytree(data, saved)
    head = rows(data / "journal.sqlite3", "SELECT MAX(seq) FROM events")[0][0]
    tamper(data / "journal.sqlite3", f"UPDATE events SET hash='{'ab' * 32}' WHERE seq=5")
    report = await check(data, copy)
    assert (report.ok, report.first_bad_seq, report.problem) == (False, 5, "replica mismatch")
    shutil.rmtree(data)
    shutil.copytree(saved, data)
    tamper(data / "journal.sqlite3", f"DELETE FROM events WHERE seq > {head - 4}")
    report = await check(data, copy)
    assert (report.ok, report.first_bad_seq, report.problem) == (False, head - 3, "truncated")
    # the copy's own chain is checked too: a changed blob in the copy is named
    blob = next(k for k in copy.list("blobs"))
    (tmp_path / "copy" / blob).chmod(0o600)
    (tmp_path / "copy" / blob).write_bytes(b"changed")
    report = await replica.verify_copy(copy, None, None, None)
    assert (report.ok, report.problem) == (False, "blob changed")


async def test_restore_rebuilds_a_journal_that_verifies(tmp_path: Path) -> None:
    data, copy = tmp_path / "data", DirectoryTarget(tmp_path / "copy")
    await grow(data, 0, 15)
    await sync(data, copy)
    restored = tmp_path / "restored"
    count = await replica.restore(copy, restored)
    assert count == rows(data / "journal.sqlite3", "SELECT COUNT(*) FROM events")[0][0]
    j = await Journal.open(restored, read_only=True)
    try:
        report = await j.verify_recorded(full=True)
        assert report.ok and report.count == count, report.line()
        msgs = await j.fetchall("SELECT COUNT(*) AS n FROM messages")
        assert msgs[0]["n"] == 15
    finally:
        await j.close()
    assert public(restored) == public(data) and not (restored / "keys" / signing.KEY_NAME).exists()
    with pytest.raises(Exception, match="restore into a new, empty data directory"):
        await replica.restore(copy, restored)


async def test_cli_replicate_verify_replica_and_restore(tmp_path: Path) -> None:
    data = tmp_path / "data"
    await grow(data, 0, 6)
    env = dict(os.environ, PYTHONPATH=str(ROOT))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "relay.cli", "journal", *args], capture_output=True, text=True,
                              env=env, timeout=60, cwd=tmp_path)

    out = await asyncio.to_thread(cli, "replicate", "--data-dir", str(data), "--to", str(tmp_path / "copy"))
    assert out.returncode == 0 and out.stdout.startswith("copied "), out.stderr
    out = await asyncio.to_thread(cli, "verify", "--data-dir", str(data), "--replica", str(tmp_path / "copy"))
    assert out.returncode == 0 and "copy agrees with the journal up to seq" in out.stdout, out.stdout + out.stderr
    out = await asyncio.to_thread(cli, "restore", "--from", str(tmp_path / "copy"), "--data-dir", str(tmp_path / "new"))
    assert out.returncode == 0 and out.stdout.startswith("restored ") and "verify: ok:" in out.stdout, out.stderr


async def test_relay_run_keeps_the_copy_and_alerts_when_it_fails(tmp_path: Path) -> None:
    from relay.app import RelayApp
    from tests.compliance_support import memory_compliance_config, until, write_policies

    copy_dir = tmp_path / "copy"
    cfg = memory_compliance_config(tmp_path / "data", write_policies(tmp_path / "policies"),
                                   journal={"checkpoint_every": 5, "replica": {"path": str(copy_dir), "every": "0.2s"}})
    app = await RelayApp.start(cfg)
    try:
        clients, staff = app.channels["clients"], app.channels["staff"]
        for i in range(4):
            await clients.inject("u1", f"hello {i}", f"u1:{i}", display="Una")
        target = DirectoryTarget(copy_dir)
        await until(lambda: replica.copied_head(target) >= app.journal.head[0] > 0, timeout=15)
        report = await replica.verify_copy(target, None, app.journal.path, public(app.config.data_dir))
        assert report.ok, report.line()
        assert app.health.checks["replica"].ok and app.health.gauges["relay_replica_head"][0] >= 1
        # someone points the copy at another journal's: the run fails, is journaled and alerted once
        (copy_dir / "meta.json").chmod(0o600)
        (copy_dir / "meta.json").write_text(json.dumps({"meta": {"hash": "other"}, "public_key": None}))
        await clients.inject("u1", "after", "u1:9", display="Una")
        await until(lambda: not app.health.checks["replica"].ok, timeout=15)
        await until(lambda: any("[relay replica]" in o.text for o in staff.sent), timeout=10)
        await asyncio.sleep(0.5)
        assert len([o for o in staff.sent if "[relay replica]" in o.text]) == 1
        failed = await app.journal.fetchall("SELECT body_json FROM events WHERE kind='replica.failed'")
        assert len(failed) == 1 and "another journal" in failed[0]["body_json"]
    finally:
        await app.stop()

"""Incremental verify: from the checkpoint the last good verify recorded; `--full` re-reads it all."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from relay.journal import verified
from relay.journal.chain import event_canonical, event_hash
from tests.journal_support import jopen, received, rows, tamper  # noqa: F401  (jopen is a fixture)


async def grow(tmp_path: Path, jopen: Any, start: int, n: int, every: int = 5) -> None:
    """Append `n` messages (half with a raw blob) and close: a checkpoint every `every` events."""
    j = await jopen(tmp_path, checkpoint_every=every)
    for i in range(start, start + n):
        sha = await j.put_blob(f"raw {i}".encode()) if i % 2 else None
        await j.append("message.received", received(f"m{i}", f"text {i}", raw_sha256=sha), f"c-{i % 3}")
    await j.close()


async def verify(tmp_path: Path, jopen: Any, full: bool = False) -> Any:
    j = await jopen(tmp_path, read_only=True)
    return await j.verify_recorded(full=full)


async def test_second_verify_starts_after_the_recorded_checkpoint(tmp_path: Path, jopen: Any) -> None:
    await grow(tmp_path, jopen, 0, 12)
    first = await verify(tmp_path, jopen)
    assert first.ok and first.full and first.from_seq == 1 and first.count == first.head
    mark = verified.load(tmp_path)
    assert mark is not None and mark.full_at is not None and mark.seq == first.last_checkpoint[0]
    assert rows(tmp_path / "journal.sqlite3", "SELECT kind FROM events WHERE seq=?", (mark.seq,)) == [("checkpoint",)]
    assert stat.S_IMODE(os.stat(tmp_path / verified.FILE_NAME).st_mode) == 0o600

    await grow(tmp_path, jopen, 12, 7)
    second = await verify(tmp_path, jopen)
    assert second.ok and not second.full and second.from_seq == mark.seq + 1
    assert second.count == second.head - mark.seq < first.count
    assert "incremental from seq" in second.line()
    assert verified.load(tmp_path).seq > mark.seq  # type: ignore[union-attr]
    assert json.loads(json.dumps(second.to_dict()))["mode"] == "incremental"


async def test_new_rows_are_checked_and_old_edits_need_full(tmp_path: Path, jopen: Any) -> None:
    await grow(tmp_path, jopen, 0, 10)
    assert (await verify(tmp_path, jopen)).ok
    mark = verified.load(tmp_path)
    assert mark is not None
    await grow(tmp_path, jopen, 10, 6)
    db = tmp_path / "journal.sqlite3"
    new_seq = mark.seq + 2
    tamper(db, f"UPDATE events SET body_json=replace(body_json, 'text', 'TEXT') WHERE seq={new_seq}")
    report = await verify(tmp_path, jopen)
    assert (report.ok, report.first_bad_seq, report.problem) == (False, new_seq, "hash mismatch")
    assert verified.load(tmp_path) == mark  # a failed verify does not move the mark
    tamper(db, f"UPDATE events SET body_json=replace(body_json, 'TEXT', 'text') WHERE seq={new_seq}")
    assert (await verify(tmp_path, jopen)).ok
    # an edit before the recorded checkpoint is the full verify's to find
    tamper(db, "UPDATE events SET body_json=replace(body_json, 'text 1', 'text 9') WHERE seq=2")
    assert (await verify(tmp_path, jopen)).ok
    report = await verify(tmp_path, jopen, full=True)
    assert (report.ok, report.first_bad_seq, report.problem, report.from_seq) == (False, 2, "hash mismatch", 1)


async def test_rewritten_or_removed_recorded_checkpoint_is_named(tmp_path: Path, jopen: Any) -> None:
    await grow(tmp_path, jopen, 0, 10)
    assert (await verify(tmp_path, jopen)).ok
    mark = verified.load(tmp_path)
    assert mark is not None
    db = tmp_path / "journal.sqlite3"
    tamper(db, f"UPDATE events SET hash='{'ab' * 32}' WHERE seq={mark.seq}")
    report = await verify(tmp_path, jopen)
    assert (report.first_bad_seq, report.problem) == (mark.seq, "hash mismatch")
    assert "was verified with hash" in report.detail
    tamper(db, f"DELETE FROM events WHERE seq>={mark.seq}")
    report = await verify(tmp_path, jopen)
    assert (report.first_bad_seq, report.problem) == (mark.seq, "truncated")


async def test_fast_path_agrees_with_re_encoding_and_hmac(tmp_path: Path, jopen: Any) -> None:
    """The verifier hashes the stored canonical text; a row stored in other bytes for the same
    JSON value is judged by re-encoding, as the documented hash defines, and a changed value fails."""
    key = b"k" * 32
    j = await jopen(tmp_path, hmac_key=key, checkpoint_every=1000)
    await j.append("message.received", received("m1", "héllo 谢谢"), "c-1")
    await j.close()
    db = tmp_path / "journal.sqlite3"
    seq, ts, kind, conv, body_json, prev, h = rows(db, "SELECT * FROM events WHERE seq=1")[0]
    assert event_hash(prev, event_canonical(seq, ts, kind, conv, json.loads(body_json)), key) == h
    assert (await (await jopen(tmp_path, read_only=True, hmac_key=key)).verify()).ok
    spaced = json.dumps(json.loads(body_json), sort_keys=True, ensure_ascii=False)  # ", " and ": "
    with __import__("sqlite3").connect(db) as conn:
        conn.execute("UPDATE events SET body_json=? WHERE seq=1", (spaced,))
    assert (await (await jopen(tmp_path, read_only=True, hmac_key=key)).verify()).ok
    with __import__("sqlite3").connect(db) as conn:
        conn.execute("UPDATE events SET body_json=? WHERE seq=1", (spaced.replace("héllo", "hello"),))
    report = await (await jopen(tmp_path, read_only=True, hmac_key=key)).verify()
    assert (report.ok, report.first_bad_seq, report.problem) == (False, 1, "hash mismatch")

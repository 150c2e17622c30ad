"""The group-commit writer task: one transaction per batch of queued units, then checkpoints.

While one commit is in flight new units queue up and go into the next transaction, so many
events share one fsync. Seq, the hash chain, duplicate refusal (`unless`), projections and
signed checkpoints are all decided here, by the only writer, inside the same transaction.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import sqlite3
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from relay.journal import checkpoints, projections, signing
from relay.journal.chain import Event, canonical_json, fast_canonical, link_bytes, make_event
from relay.journal.opening import JournalError
from relay.journal.witness import publish_all

log = logging.getLogger("relay.journal")

_INSERT_EVENT = "INSERT INTO events(seq, ts, kind, conversation, body_json, prev_hash, hash) VALUES(?,?,?,?,?,?,?)"


@dataclass
class JournalStats:
    """Counters for tests and benchmarks: `commits` < `events` shows group commit at work."""

    commits: int = 0
    events: int = 0
    largest_batch: int = 0
    checkpoints: int = 0
    projection_errors: int = 0
    wal_restarts: int = 0
    witness_failures: int = 0


Item = tuple[str, "str | None", str, dict[str, Any], float, str, str]
"""(kind, conversation, body_json, body, ts, head, tail): encoded by the caller, so the writer
only adds seq and hashes; `head` and `tail` are `canonical_parts`."""


class Unit:
    """What one caller waits for: events (one transaction, in order), a kv write or a rebuild."""

    __slots__ = ("items", "future", "kv", "rebuild", "unless", "single")

    def __init__(
        self,
        items: list[Item],
        future: asyncio.Future[Any],
        kv: tuple[str, str, str | None] | None = None,
        rebuild: bool = False,
        unless: str | None = None,
        single: bool = False,
    ) -> None:
        self.single = single
        self.items = items
        self.future = future
        self.kv = kv
        self.rebuild = rebuild
        self.unless = unless


def _unit_error(unit: Unit, exc: Exception) -> JournalError:
    if unit.kv is not None:
        what = f"state {unit.kv[0]}/{unit.kv[1]!a}"
    elif unit.rebuild:
        what = "projection rebuild"
    else:
        what = ", ".join(sorted({item[0] for item in unit.items})) + " event(s)"
    if isinstance(exc, UnicodeError):
        why = "text that is not valid Unicode (a lone surrogate); make it valid before writing"
    else:
        why = f"{type(exc).__name__}: {exc}"
    error = JournalError(f"not journaled: {what}: {why}")
    error.__cause__ = exc
    return error


class GroupCommitWriter:
    """Mixed into `relay.journal.Journal`, which opens the connections and sets this state."""

    wal_flush_events = 2000
    """Committed events between background WAL checkpoints."""
    wal_restart_frames = 65536
    """WAL length (pages) past which the background checkpoint also restarts the WAL."""

    stats: JournalStats
    checkpoint_dir: Path
    _db: aiosqlite.Connection | None
    _wal_conn: aiosqlite.Connection
    _queue: deque[Unit]
    _wake: asyncio.Event
    _closing: bool
    _checkpoint_due: bool
    _timer: asyncio.TimerHandle | None
    _hmac_key: bytes | None
    _signing_key: Ed25519PrivateKey
    _cp_every: int
    _cp_seconds: float
    _max_batch: int
    _head_seq: int
    _head_hash: str
    _since_cp: int
    _wal_task: asyncio.Task[None] | None
    _wal_mark: int
    _checkpoint_record: dict[str, Any] | None
    _file_tasks: set[asyncio.Task[None]]
    witnesses: tuple[Any, ...]
    _witness_pending: dict[str, list[dict[str, Any]]]

    async def _writer(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._queue or self._checkpoint_due:
                    await self._commit_next()
                if self._closing and not self._queue:
                    if self._since_cp > 0:
                        self._checkpoint_due = True
                        await self._commit_next()
                    return
        except BaseException as exc:
            while self._queue:
                unit = self._queue.popleft()
                if not unit.future.done():
                    unit.future.set_exception(JournalError(f"journal writer stopped: {type(exc).__name__}"))
            raise

    def _take_batch(self) -> tuple[list[Unit], bool]:
        """The next group commit: queued units up to `max_batch` items (a rebuild alone), and
        whether it must write a checkpoint. Shared by both backends' writers."""
        units: list[Unit] = []
        size = 0
        while self._queue:
            unit = self._queue[0]
            if unit.rebuild and units:
                break
            n = len(unit.items) or 1
            if units and size + n > self._max_batch:
                break
            units.append(self._queue.popleft())
            size += n
            if unit.rebuild:
                break
        force = self._checkpoint_due
        self._checkpoint_due = False
        return units, force

    async def _commit_next(self) -> None:
        units, force = self._take_batch()
        # aiosqlite runs every call on its connection thread; the whole batch goes as one
        # call so the per-event cost is SQL, not thread hops (aiosqlite's `_execute`).
        assert self._db is not None
        try:
            outcomes = [(True, r) for r in await self._db._execute(self._write, units, force)]
            records = [self._checkpoint_record]
        except Exception as exc:
            # One bad unit must not fail the others: commit them one by one, so only it fails.
            log.error("journal commit of %d unit(s) failed (%s); retrying them one at a time",
                      len(units), type(exc).__name__)
            outcomes, records = await self._db._execute(self._write_each, units, force)
        for unit, (ok, result) in zip(units, outcomes):
            if unit.future.done():
                continue
            if ok:
                unit.future.set_result(result[0] if unit.single else result)
            else:
                unit.future.set_exception(result)
        self._checkpoint_record = None
        for record in records:
            if record is not None:
                task = asyncio.get_running_loop().create_task(self._file_checkpoint(record))
                self._file_tasks.add(task)
                task.add_done_callback(self._file_tasks.discard)
        if self._since_cp > 0 and self._timer is None and not self._closing:
            self._arm_timer()
        if self.stats.events - self._wal_mark >= self.wal_flush_events and self._wal_task is None:
            self._wal_mark = self.stats.events
            self._wal_task = asyncio.get_running_loop().create_task(self._flush_wal())

    async def _flush_wal(self) -> None:
        """Copies committed WAL pages into the database on a third connection, so that work
        (and its fsync) runs beside the commits instead of inside one. Under load that never
        pauses the WAL is never fully copied and so never restarts; past `wal_restart_frames` a
        RESTART checkpoint makes the writer wait (its busy_timeout is 30 s) while it catches up."""
        try:
            rows = await self._wal_conn.execute_fetchall("PRAGMA wal_checkpoint(PASSIVE)")
            if rows and rows[0][1] > self.wal_restart_frames:
                await self._wal_conn.execute_fetchall("PRAGMA wal_checkpoint(RESTART)")
                self.stats.wal_restarts += 1
        except sqlite3.Error as exc:
            log.warning("WAL checkpoint failed: %r", exc)
        finally:
            self._wal_task = None

    def _arm_timer(self) -> None:
        self._timer = asyncio.get_running_loop().call_later(self._cp_seconds, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._since_cp > 0 and not self._closing:
            self._checkpoint_due = True
            self._wake.set()

    def _write_each(self, units: list[Unit], force_checkpoint: bool) -> tuple[list[tuple[bool, Any]], list[Any]]:
        """After a failed batch: each unit in its own transaction; a failing one gets its error,
        as a `JournalError` that names the event kinds and the cause (never the content)."""
        outcomes: list[tuple[bool, Any]] = []
        records: list[dict[str, Any] | None] = []
        for unit in units:
            try:
                [result] = self._write([unit], force_checkpoint)
            except Exception as exc:
                outcomes.append((False, _unit_error(unit, exc)))
                continue
            force_checkpoint = False
            outcomes.append((True, result))
            records.append(self._checkpoint_record)
            self._checkpoint_record = None
        return outcomes, records

    def _write(self, units: list[Unit], force_checkpoint: bool) -> list[Any]:
        """Runs on the writer connection's thread: one transaction for the whole batch."""
        assert self._db is not None
        db: sqlite3.Connection = self._db._conn
        key = self._hmac_key
        sha256 = hashlib.sha256
        seq, prev = self._head_seq, self._head_hash
        rows: list[tuple[Any, ...]] = []
        events: list[projections.Record] = []
        results: list[Any] = []
        claimed: set[str] = set()
        for unit in units:
            if unit.unless is not None:
                if unit.unless in claimed or db.execute(
                    "SELECT 1 FROM messages WHERE id = ?", (unit.unless,)
                ).fetchone():
                    results.append(None)
                    continue
                claimed.add(unit.unless)
            out: list[Event] = []
            for kind, conversation, body_json, body, ts, head, tail in unit.items:
                seq += 1
                data = link_bytes(prev, head, seq, tail)
                h = sha256(data).hexdigest() if key is None else hmac.digest(key, data, "sha256").hex()
                rows.append((seq, ts, kind, conversation, body_json, prev, h))
                events.append((seq, ts, kind, conversation, body, body_json, prev, h))
                out.append(make_event(seq, ts, kind, conversation, body, prev, h))
                prev = h
            results.append(out)
        since = self._since_cp + len(events)
        checkpoint: Event | None = None
        if since >= self._cp_every or (force_checkpoint and since > 0):
            body = signing.sign_checkpoint(self._signing_key, seq, prev)
            ts = time.time()
            seq += 1
            body_json = canonical_json(body)
            data = prev.encode() + fast_canonical(seq, ts, '"checkpoint"', "null", body_json)
            h = sha256(data).hexdigest() if key is None else hmac.digest(key, data, "sha256").hex()
            rows.append((seq, ts, "checkpoint", None, body_json, prev, h))
            checkpoint = Event(seq, ts, "checkpoint", None, body, prev, h)
            prev = h
        if not rows and not any(u.kv or u.rebuild for u in units):
            return results
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(_INSERT_EVENT, rows)
            projection_errors = projections.apply_events(db, events)
            for i, unit in enumerate(units):
                if unit.kv is not None:
                    ns, k, v = unit.kv
                    if v is None:
                        db.execute("DELETE FROM kv WHERE namespace=? AND key=?", (ns, k))
                    else:
                        db.execute(
                            "INSERT INTO kv(namespace, key, value) VALUES(?,?,?)"
                            " ON CONFLICT(namespace, key) DO UPDATE SET value=excluded.value",
                            (ns, k, v),
                        )
                elif unit.rebuild:
                    results[i] = projections.rebuild(db)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        self._head_seq, self._head_hash = seq, prev
        self.stats.projection_errors += projection_errors
        self.stats.commits += 1
        self.stats.events += len(rows)
        self.stats.largest_batch = max(self.stats.largest_batch, len(rows))
        if checkpoint is not None:
            self._since_cp = 0
            self.stats.checkpoints += 1
            self._checkpoint_record = dict(checkpoint.body, seq=checkpoint.seq, hash=checkpoint.hash, ts=checkpoint.ts)
        else:
            self._since_cp = since
        return results

    async def _file_checkpoint(self, record: dict[str, Any]) -> None:
        """Written after the commit, beside the next ones: a file never names an uncommitted head."""
        try:
            await asyncio.to_thread(checkpoints.write, self.checkpoint_dir, record)
        except OSError as exc:
            log.error("cannot write checkpoint file to %s: %r", self.checkpoint_dir, exc)
        if self.witnesses:
            await self._witness(record)

    async def _witness(self, record: dict[str, Any]) -> None:
        """Every witness at once; a failure is logged, counted and journaled (`witness.failed`),
        and what it missed goes again with the next checkpoint."""
        failures = await publish_all(self.witnesses, self._witness_pending, record, self.checkpoint_dir)
        for line in failures:
            self.stats.witness_failures += 1
            log.error("%s", line)
            if not self._closing:
                try:
                    await self.append("witness.failed", {"seq": record.get("seq"), "error": line})  # type: ignore[attr-defined]
                except Exception as exc:
                    log.error("cannot journal witness.failed: %r", exc)

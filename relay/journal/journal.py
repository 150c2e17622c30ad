"""The journal: one SQLite file, one writer task doing group commit, a read-only connection for queries.

Callers await `append` and get their Event once the transaction holding it has committed; while
one commit is in flight new events queue up and go into the next transaction, so many events
share one fsync. The writer assigns seq and the hash chain, applies the projections and writes
signed checkpoints, all inside the same transaction as the events.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import hmac
import logging
import os
import sqlite3
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import aiosqlite

from relay.journal import checkpoints, projections, schema, signing
from relay.journal.blobs import BlobStore
from relay.private_files import create_private, open_private, private_dir, tighten_logged
from relay.journal.chain import (
    GENESIS, Event, canonical_json, canonical_parts, canonical_str, fast_canonical, link_bytes, make_event,
)
from relay.journal.verify import ChainVerifier, VerifyReport, erased_blobs, erased_tombstones, load_checkpoint_files

log = logging.getLogger("relay.journal")

DB_NAME = "journal.sqlite3"
LOCK_NAME = "journal.lock"
SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")
_KEY_CHECK = b"relay journal hmac key check"
_INSERT_EVENT = "INSERT INTO events(seq, ts, kind, conversation, body_json, prev_hash, hash) VALUES(?,?,?,?,?,?,?)"
_SELECT_EVENTS = "SELECT seq, ts, kind, conversation, body_json, prev_hash, hash FROM events"


class JournalError(Exception):
    """A journal that cannot be opened or used as asked; the message says what to do."""


def _take_writer_lock(path: Path) -> IO[bytes]:
    """One writer per journal: a second one would fork the chain (same seq, different events)."""
    f = os.fdopen(open_private(path, os.O_RDWR | os.O_APPEND), "a+b")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise JournalError(f"{path.parent} is in use by another relay process (stop it first)") from None
    return f


@dataclass
class JournalStats:
    """Counters for tests and benchmarks: `commits` < `events` shows group commit at work."""

    commits: int = 0
    events: int = 0
    largest_batch: int = 0
    checkpoints: int = 0
    projection_errors: int = 0
    wal_restarts: int = 0


Item = tuple[str, "str | None", str, dict[str, Any], float, str, str]
"""(kind, conversation, body_json, body, ts, head, tail): encoded by the caller, so the writer
only adds seq and hashes; `head` and `tail` are `canonical_parts`."""


class _Unit:
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


class Journal:
    """Open with `await Journal.open(data_dir, ...)`; see docs/internals.md ("Journal")."""

    wal_flush_events = 2000
    """Committed events between background WAL checkpoints."""
    wal_restart_frames = 65536
    """WAL length (pages) past which the background checkpoint also restarts the WAL."""

    def __init__(self) -> None:
        raise TypeError("use `await Journal.open(data_dir, ...)`")

    @classmethod
    async def open(
        cls,
        data_dir: Path,
        *,
        hmac_key: bytes | None = None,
        checkpoint_every: int = 1000,
        checkpoint_seconds: float = 60.0,
        checkpoint_dir: Path | None = None,
        synchronous: str = "FULL",
        read_only: bool = False,
        max_batch: int = 10000,
    ) -> Journal:
        """`read_only` opens an existing journal for queries and verify only (no writer, no keys made).

        `max_batch` caps events per transaction; 1 disables group commit (the benchmark baseline).
        """
        self = object.__new__(cls)
        data_dir = Path(data_dir)
        sync = synchronous.upper()
        if sync not in SYNCHRONOUS:
            raise JournalError(f"journal.synchronous must be one of {', '.join(SYNCHRONOUS)}, not {synchronous!r}")
        if checkpoint_every < 1 or max_batch < 1:
            raise JournalError("checkpoint_every and max_batch must be at least 1")
        self.data_dir = data_dir
        self.path = data_dir / DB_NAME
        self.blobs = BlobStore(data_dir / "blobs")
        self.keys_dir = data_dir / "keys"
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else data_dir / "checkpoints"
        self.read_only = read_only
        self.stats = JournalStats()
        self._hmac_key = hmac_key
        self._cp_every = checkpoint_every
        self._cp_seconds = checkpoint_seconds
        self._max_batch = max_batch
        self._queue: deque[_Unit] = deque()
        self._closing = False
        self._closed = False
        self._checkpoint_due = False
        self._timer: asyncio.TimerHandle | None = None
        self._kind_json: dict[str, str] = {}
        self._db: aiosqlite.Connection | None = None
        self._writer_task: asyncio.Task[None] | None = None
        self._head_seq = 0
        self._head_hash = GENESIS
        self._since_cp = 0
        self._wal_task: asyncio.Task[None] | None = None
        self._wal_mark = 0
        self._checkpoint_record: dict[str, Any] | None = None
        self._file_tasks: set[asyncio.Task[None]] = set()
        if read_only:
            if not self.path.exists():
                raise JournalError(f"no journal at {self.path} (check data_dir)")
        else:
            private_dir(data_dir)
            tighten_logged(data_dir)
            self._lock = _take_writer_lock(data_dir / LOCK_NAME)
            create_private(self.path)  # before SQLite: its -wal and -shm files copy this file's mode
            self._db = await aiosqlite.connect(self.path, isolation_level=None)
            try:
                await self._prepare_writer(sync)
            except BaseException:
                await self._db.close()
                self._lock.close()
                raise
        reader: aiosqlite.Connection | None = None
        wal_conn: aiosqlite.Connection | None = None
        try:
            if not read_only:
                wal_conn = await aiosqlite.connect(self.path, isolation_level=None)
                await wal_conn.execute("PRAGMA busy_timeout=2000")
                await wal_conn.execute(f"PRAGMA synchronous={sync}")
                self._wal_conn = wal_conn
            reader = await aiosqlite.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None)
            reader.row_factory = sqlite3.Row
            self._reader = reader
            await reader.execute("PRAGMA busy_timeout=5000")
            if read_only:
                await self._check_meta_readonly()
                row = await reader.execute_fetchall("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1")
                if row:
                    self._head_seq, self._head_hash = row[0][0], row[0][1]
        except BaseException:
            for conn in (reader, wal_conn):
                if conn is not None:
                    await conn.close()
            if self._db is not None:
                await self._db.close()
                self._lock.close()
            raise
        if not read_only:
            self._wake = asyncio.Event()
            self._writer_task = asyncio.get_running_loop().create_task(self._writer())
            if self._since_cp > 0:
                self._arm_timer()
        return self

    # --- set-up -------------------------------------------------------------------------

    async def _prepare_writer(self, sync: str) -> None:
        assert self._db is not None
        db = self._db
        await db.execute("PRAGMA busy_timeout=30000")
        mode = (await db.execute_fetchall("PRAGMA journal_mode=WAL"))[0][0]
        if str(mode).lower() != "wal":
            raise JournalError(f"{self.path}: cannot switch to WAL mode (got {mode})")
        await db.execute(f"PRAGMA synchronous={sync}")
        await db.execute("PRAGMA wal_autocheckpoint=0")
        await db.execute("PRAGMA cache_size=-65536")  # 64 MiB: hot index pages stay cached between commits
        await db.executescript(schema.CORE + schema.PROJECTIONS)
        meta = dict(await db.execute_fetchall("SELECT key, value FROM meta"))
        if not meta:
            await db.executemany("INSERT INTO meta(key, value) VALUES(?, ?)", list(self._meta_for_key().items()))
        else:
            self._check_meta(meta)
        rows = await db.execute_fetchall("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1")
        if rows:
            self._head_seq, self._head_hash = rows[0][0], rows[0][1]
        recent = await db.execute_fetchall(
            "SELECT kind FROM events ORDER BY seq DESC LIMIT ?", (self._cp_every + 1,)
        )
        kinds = [r[0] for r in recent]
        self._since_cp = kinds.index("checkpoint") if "checkpoint" in kinds else min(len(kinds), self._cp_every)
        self._signing_key = await asyncio.to_thread(signing.load_or_create, self.keys_dir)

    def _meta_for_key(self) -> dict[str, str]:
        if self._hmac_key is None:
            return {"hash": "sha256"}
        return {"hash": "hmac-sha256", "hmac_check": hmac.digest(self._hmac_key, _KEY_CHECK, "sha256").hex()}

    def _check_meta(self, meta: dict[str, str]) -> None:
        want = self._meta_for_key()
        if meta.get("hash") == "hmac-sha256" and self._hmac_key is None:
            raise JournalError(f"{self.path} is chained with HMAC: set journal.hmac_key")
        if meta.get("hash") == "sha256" and self._hmac_key is not None:
            raise JournalError(f"{self.path} is chained without HMAC: remove journal.hmac_key")
        if meta.get("hmac_check") != want.get("hmac_check"):
            raise JournalError(f"journal.hmac_key is not the key {self.path} was written with")

    async def _check_meta_readonly(self) -> None:
        rows = await self._reader.execute_fetchall("SELECT key, value FROM meta")
        self._check_meta({r[0]: r[1] for r in rows})

    # --- writing ------------------------------------------------------------------------

    def _item(self, kind: str, body: dict[str, Any], conversation: str | None, ts: float) -> Item:
        if not isinstance(kind, str) or not kind:
            raise ValueError("event kind must be a non-empty string")
        if not isinstance(body, dict):
            raise TypeError(f"event body must be a dict, not {type(body).__name__}")
        if conversation is not None and not isinstance(conversation, str):
            raise TypeError("conversation must be a string or None")
        kind_json = self._kind_json.get(kind)
        if kind_json is None:
            kind_json = self._kind_json[kind] = canonical_json(kind)
        conv_json = "null" if conversation is None else canonical_str(conversation)
        body_json = canonical_json(body)
        head, tail = canonical_parts(ts, kind_json, conv_json, body_json)
        return (kind, conversation, body_json, body, ts, head, tail)

    def _submit(self, unit: _Unit) -> None:
        if self._closing or self._writer_task is None:
            raise JournalError("journal is closed" if self._closing else "journal was opened read-only")
        self._queue.append(unit)
        self._wake.set()

    def append(self, kind: str, body: dict[str, Any], conversation: str | None = None) -> asyncio.Future[Event]:
        """Await it: resolves after the transaction holding the event has committed.

        Submitted at the call (a bad event raises there), in call order. A future rather than a
        coroutine: one task step and one frame fewer per event on the event loop.
        """
        item = self._item(kind, body, conversation, time.time())
        future: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
        self._submit(_Unit([item], future, single=True))
        return future

    async def append_many(
        self, events: Sequence[tuple[str, dict[str, Any], str | None]], unless_message: str | None = None
    ) -> list[Event] | None:
        """All in one transaction, consecutive and in order.

        With `unless_message`, the writer first checks the `messages` projection for that id and
        appends nothing (returning None) if it is there: deduplication decided by the only
        writer, so two redeliveries can never both be journaled, and without a read per call.
        """
        return await self.submit_many(events, unless_message)

    def submit_many(
        self, events: Sequence[tuple[str, dict[str, Any], str | None]], unless_message: str | None = None
    ) -> asyncio.Future[list[Event] | None]:
        """`append_many` in two steps: the order is fixed now, the future resolves at commit.

        A caller holding a lock can submit, release the lock and then await, so consecutive
        events of one conversation keep their order and still share a group commit.
        """
        future: asyncio.Future[list[Event] | None] = asyncio.get_running_loop().create_future()
        if not events:
            future.set_result([])
            return future
        now = time.time()
        items = [self._item(kind, body, conversation, now) for kind, body, conversation in events]
        self._submit(_Unit(items, future, unless=unless_message))
        return future

    async def kv_put(self, namespace: str, key: str, value: str | None) -> None:
        """Adapter state (not chained); returns after commit. A None value deletes the key."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._submit(_Unit([], future, kv=(namespace, key, value)))
        await future

    async def kv_get(self, namespace: str, key: str) -> str | None:
        rows = await self._reader.execute_fetchall(
            "SELECT value FROM kv WHERE namespace=? AND key=?", (namespace, key)
        )
        return rows[0][0] if rows else None

    async def checkpoint(self) -> None:
        """Sign the head now if anything is new since the last checkpoint; returns after commit.

        An evidence export asks for this so that a signed checkpoint covers every exported event.
        """
        if self._since_cp == 0:
            return
        self._checkpoint_due = True
        await self.kv_put("journal", "checkpoint_requested", repr(time.time()))

    async def rebuild(self) -> int:
        """Drop the projections and replay every event, in one transaction; returns the count."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._submit(_Unit([], future, rebuild=True))
        return await future

    async def put_blob(self, data: bytes) -> str:
        """Stores bytes under their SHA-256, fsynced before returning; storing twice is harmless."""
        if self.read_only:
            raise JournalError("journal was opened read-only")
        return await asyncio.to_thread(self.blobs.put, bytes(data))

    async def get_blob(self, sha: str) -> bytes | None:
        return await asyncio.to_thread(self.blobs.get, sha)

    async def fetchall(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> list[sqlite3.Row]:
        """Runs on the read-only connection: sees everything committed, can change nothing."""
        return list(await self._reader.execute_fetchall(sql, params))

    @property
    def head(self) -> tuple[int, str]:
        """(seq, hash) of the last committed event."""
        return self._head_seq, self._head_hash

    # --- the writer task ----------------------------------------------------------------

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
                    unit.future.set_exception(JournalError(f"journal writer stopped: {exc!r}"))
            raise

    async def _commit_next(self) -> None:
        units: list[_Unit] = []
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
        try:
            # aiosqlite runs every call on its connection thread; the whole batch goes as one
            # call so the per-event cost is SQL, not thread hops (aiosqlite's `_execute`).
            assert self._db is not None
            results = await self._db._execute(self._write, units, force)
        except Exception as exc:
            log.error("journal commit failed: %r", exc)
            for unit in units:
                if not unit.future.done():
                    unit.future.set_exception(exc)
            return
        for unit, result in zip(units, results):
            if not unit.future.done():
                unit.future.set_result(result[0] if unit.single else result)
        if self._checkpoint_record is not None:
            record, self._checkpoint_record = self._checkpoint_record, None
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

    def _write(self, units: list[_Unit], force_checkpoint: bool) -> list[Any]:
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
            self.stats.projection_errors += projections.apply_events(db, events)
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

    # --- reading and checking -----------------------------------------------------------

    async def verify(self, chunk: int = 2000) -> VerifyReport:
        """Whole chain from seq 1, every named blob, checkpoint signatures, checkpoint files."""
        known = await asyncio.to_thread(signing.load_public, self.keys_dir)
        known_keys = {known} if known else None
        records = await asyncio.to_thread(checkpoints.read_all, self.checkpoint_dir)
        files, bad = load_checkpoint_files(records, known_keys)
        if bad is not None:
            return bad
        async with aiosqlite.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None) as db:
            await db.execute("BEGIN")
            erased_rows = await db.execute_fetchall(
                "SELECT seq, body_json FROM events WHERE kind='retention.erased'"
            )
            verifier = ChainVerifier(
                key=self._hmac_key,
                blobs=self.blobs,
                erased=erased_blobs((r[0], r[1]) for r in erased_rows),
                files=files,
                known_keys=known_keys,
                tombstones=erased_tombstones((r[0], r[1]) for r in erased_rows),
            )
            cursor = await db.execute(_SELECT_EVENTS + " ORDER BY seq")
            while rows := await cursor.fetchmany(chunk):
                if not await asyncio.to_thread(verifier.feed, rows):
                    break
            await cursor.close()
            await db.execute("COMMIT")
        return verifier.finish()

    async def iter_events(
        self, where: str = "", params: tuple[Any, ...] = (), limit: int | None = None, chunk: int = 1000
    ) -> AsyncIterator[Event]:
        """Events in seq order, streamed (`where` is an SQL condition on the events table)."""
        sql = _SELECT_EVENTS + (f" WHERE {where}" if where else "") + " ORDER BY seq"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        cursor = await self._reader.execute(sql, params)
        try:
            while rows := await cursor.fetchmany(chunk):
                for ev in projections.rows_to_events(tuple(r) for r in rows):
                    yield ev
        finally:
            await cursor.close()

    async def close(self) -> None:
        """Drains queued appends, writes a final checkpoint if there are new events, closes."""
        if self._closed:
            return
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._writer_task is not None:
            self._wake.set()
            try:
                await self._writer_task
            finally:
                self._closed = True
                if self._wal_task is not None:
                    await self._wal_task
                if self._file_tasks:
                    await asyncio.gather(*self._file_tasks)
                await self._wal_conn.close()
                await self._reader.close()
                assert self._db is not None
                await self._db.close()
                self._lock.close()
        else:
            self._closed = True
            await self._reader.close()

    async def __aenter__(self) -> Journal:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

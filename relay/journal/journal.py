"""The journal: one SQLite file, one writer task doing group commit, a read-only connection for queries.

Callers await `append` and get their Event once the transaction holding it has committed; this
module opens the connections and turns calls into units for the writer (`writer.py`); reads
are in `reads.py`, the open-time checks in `opening.py`.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiosqlite

from relay.journal import opening, signing
from relay.journal.blobs import BlobStore
from relay.journal.chain import GENESIS, Event
from relay.journal.opening import DB_NAME, LOCK_NAME, SYNCHRONOUS, JournalError
from relay.journal.reads import JournalReads
from relay.journal.witness import Witness
from relay.journal.submitting import Submitting, _check_utf8  # noqa: F401  (bench_valid_input measures it)
from relay.journal.writer import GroupCommitWriter, JournalStats, Unit
from relay.private_files import create_private, private_dir, tighten_logged


class Journal(Submitting, JournalReads, GroupCommitWriter):
    """Open with `await Journal.open(data_dir, ...)`; see docs/internals.md ("Journal")."""

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
        witnesses: Sequence[Witness] = (),
    ) -> Journal:
        """`read_only` opens an existing journal for queries and verify only (no writer, no keys made).

        `max_batch` caps events per transaction; 1 disables group commit (the benchmark baseline).
        `witnesses` get a copy of every signed checkpoint (relay/journal/witness.py).
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
        self._queue: deque[Unit] = deque()
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
        self.witnesses = tuple(witnesses)
        self._witness_pending: dict[str, list[dict[str, Any]]] = {}
        if read_only:
            if not self.path.exists():
                raise JournalError(f"no journal at {self.path} (check data_dir)")
        else:
            private_dir(data_dir)
            tighten_logged(data_dir)
            if self.checkpoint_dir.is_dir() and data_dir.resolve() not in self.checkpoint_dir.resolve().parents:
                tighten_logged(self.checkpoint_dir)
            self._lock = opening.take_writer_lock(data_dir / LOCK_NAME)
            create_private(self.path)  # before SQLite: its -wal and -shm files copy this file's mode
            self._db = await aiosqlite.connect(self.path, isolation_level=None)
            try:
                self._head_seq, self._head_hash, self._since_cp = await opening.prepare_writer(
                    self._db, self.path, sync, hmac_key, checkpoint_every)
                self._signing_key = await asyncio.to_thread(signing.load_or_create, self.keys_dir)
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
            await reader.execute("PRAGMA cache_size=-16384")  # 16 MiB: index pages of hot-path lookups stay cached
            if read_only:
                await opening.check_meta_readonly(reader, self._hmac_key, self.path)
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

    # --- writing ------------------------------------------------------------------------

    async def checkpoint(self) -> None:
        """Sign the head now if anything is new since the last checkpoint; returns after commit.

        An evidence export asks for this so that a signed checkpoint covers every exported event.
        """
        if self._since_cp == 0:
            return
        self._checkpoint_due = True
        await self.kv_put("journal", "checkpoint_requested", repr(time.time()))

    async def put_blob(self, data: bytes) -> str:
        """Stores bytes under their SHA-256, fsynced before returning; storing twice is harmless."""
        if self.read_only:
            raise JournalError("journal was opened read-only")
        return await asyncio.to_thread(self.blobs.put, bytes(data))

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

"""Reading the journal: queries on the read-only connection, streamed events, blobs, verify.

None of these can change the file; they run beside the writer and see what has committed.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiosqlite

from relay.journal import checkpoints, projections, signing
from relay.journal.blobs import BlobStore
from relay.journal.chain import Event
from relay.journal.verify import ChainVerifier, VerifyReport, erased_blobs, erased_tombstones, load_checkpoint_files

_SELECT_EVENTS = "SELECT seq, ts, kind, conversation, body_json, prev_hash, hash FROM events"


class JournalReads:
    """Mixed into `relay.journal.Journal`, which opens `_reader` and sets these attributes."""

    path: Path
    blobs: BlobStore
    keys_dir: Path
    checkpoint_dir: Path
    _reader: aiosqlite.Connection
    _hmac_key: bytes | None
    _head_seq: int
    _head_hash: str

    async def kv_get(self, namespace: str, key: str) -> str | None:
        rows = await self._reader.execute_fetchall(
            "SELECT value FROM kv WHERE namespace=? AND key=?", (namespace, key)
        )
        return rows[0][0] if rows else None

    async def get_blob(self, sha: str) -> bytes | None:
        return await asyncio.to_thread(self.blobs.get, sha)

    async def fetchall(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> list[sqlite3.Row]:
        """Runs on the read-only connection: sees everything committed, can change nothing."""
        return list(await self._reader.execute_fetchall(sql, params))

    @property
    def head(self) -> tuple[int, str]:
        """(seq, hash) of the last committed event."""
        return self._head_seq, self._head_hash

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


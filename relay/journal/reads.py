"""Reading the journal: queries on the read-only connection, streamed events, blobs, verify.

None of these can change the file; they run beside the writer and see what has committed.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiosqlite

from relay.journal import checkpoints, projections, signing, tsa, verified
from relay.journal.blobs import BlobStore
from relay.journal.chain import GENESIS, Event
from relay.journal.witness import TsaWitness, Witness
from relay.journal.witness import imprint as witness_imprint
from relay.journal.verify import ChainVerifier, VerifyReport, erased_blobs, erased_tombstones, load_checkpoint_files

_SELECT_EVENTS = "SELECT seq, ts, kind, conversation, body_json, prev_hash, hash FROM events"


class JournalReads:
    """Mixed into `relay.journal.Journal`, which opens `_reader` and sets these attributes."""

    path: Path
    data_dir: Path
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

    async def verify(self, chunk: int = 2000, *, since: tuple[int, str] | None = None,
                     witnesses: Sequence[Witness] = ()) -> VerifyReport:
        """The chain from seq 1 (or after `since`, an event already verified: (seq, hash)), every
        blob named in that range, checkpoint signatures, checkpoint files, and the records and
        timestamps of `witnesses` (read before the chain, so each names a committed checkpoint).
        A witness that cannot be read raises WitnessError."""
        start = since or (0, GENESIS)
        known = await asyncio.to_thread(signing.load_public, self.keys_dir)
        known_keys = {known} if known else None
        records = await asyncio.to_thread(checkpoints.read_all, self.checkpoint_dir)
        files, bad = load_checkpoint_files(records, known_keys)
        if bad is not None:
            return bad
        for w in witnesses:
            held = [(Path(w.name), r) for r in await w.read()]
            more, bad = load_checkpoint_files(held, known_keys, witness=w.name)
            if bad is not None:
                return bad
            files += more
        async with aiosqlite.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None) as db:
            await db.execute("BEGIN")
            if since is not None:
                gone = await _mark_problem(db, since)
                if gone is not None:
                    await db.execute("COMMIT")
                    return gone
            erased_rows = await db.execute_fetchall(
                "SELECT seq, body_json FROM events WHERE seq > ? AND kind='retention.erased'", (start[0],)
            )
            verifier = ChainVerifier(
                key=self._hmac_key,
                blobs=self.blobs,
                erased=erased_blobs((r[0], r[1]) for r in erased_rows),
                files=files,
                known_keys=known_keys,
                tombstones=erased_tombstones((r[0], r[1]) for r in erased_rows),
                start=start,
            )
            cursor = await db.execute(_SELECT_EVENTS + " WHERE seq > ? ORDER BY seq", (start[0],))
            while rows := await cursor.fetchmany(chunk):
                if not await asyncio.to_thread(verifier.feed, rows):
                    break
            await cursor.close()
            report = verifier.finish()
            if report.ok:
                for w in witnesses:
                    if isinstance(w, TsaWitness) and w.ca_file is not None:
                        report = await _check_timestamps(db, self.checkpoint_dir, w, report) or report
            await db.execute("COMMIT")
        return report

    async def verify_recorded(self, *, full: bool = False, witnesses: Sequence[Witness] = ()) -> VerifyReport:
        """Incremental by default: from the checkpoint the last good verify recorded
        (`verified.json`), or in full when there is none or `full`; a good result moves the mark."""
        mark = await asyncio.to_thread(verified.load, self.data_dir)
        since = None if full or mark is None else (mark.seq, mark.hash)
        report = await self.verify(since=since, witnesses=witnesses)
        if report.ok:
            now = time.time()
            seq, hash_ = report.last_checkpoint or ((mark.seq, mark.hash) if mark and since else (0, ""))
            full_at = now if report.full else (mark.full_at if mark else None)
            if seq:
                await asyncio.to_thread(verified.save, self.data_dir, verified.VerifiedMark(seq, hash_, now, full_at))
        return report

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



async def _mark_problem(db: aiosqlite.Connection, since: tuple[int, str]) -> VerifyReport | None:
    """The recorded checkpoint must still be there with the hash it was verified with."""
    seq, want = since
    rows = await db.execute_fetchall("SELECT hash FROM events WHERE seq = ?", (seq,))
    if not rows:
        return VerifyReport(False, 0, 0, seq, "truncated",
                            f"seq {seq}, verified earlier (verified.json), is no longer in the journal", "", seq + 1)
    if rows[0][0] != want:
        return VerifyReport(False, 0, 0, seq, "hash mismatch",
                            f"seq {seq} was verified with hash {want}, now has {rows[0][0]}", "", seq + 1)
    return None


async def _check_timestamps(db: aiosqlite.Connection, checkpoint_dir: Path, w: TsaWitness,
                            report: VerifyReport) -> VerifyReport | None:
    """Each kept RFC 3161 reply in the range verified must be the TSA's and cover the
    checkpoint the journal has at that seq."""
    assert w.ca_file is not None
    for path in sorted(checkpoint_dir.glob("checkpoint-*.tsr")):
        try:
            seq = int(path.stem.split("-")[1])
        except (IndexError, ValueError):
            continue
        if seq < report.from_seq:
            continue
        rows = await db.execute_fetchall("SELECT hash, body_json FROM events WHERE seq=? AND kind='checkpoint'", (seq,))
        if not rows:
            return replace(report, ok=False, first_bad_seq=seq, problem="witness mismatch",
                           detail=f"witness {w.name}: {path.name} timestamps a checkpoint at seq {seq}; the journal has none")
        body = json.loads(rows[0][1])
        digest = witness_imprint({"seq": seq, "hash": rows[0][0], "upto_seq": body.get("upto_seq"),
                                  "head_hash": body.get("head_hash")})
        why = await tsa.verify(path, digest, w.ca_file, w.untrusted)
        if why is not None:
            return replace(report, ok=False, first_bad_seq=seq, problem="witness mismatch",
                           detail=f"witness {w.name}: {path.name} does not timestamp the journal's checkpoint: {why}")
    return None

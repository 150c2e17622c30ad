"""`relay journal migrate`: copy a SQLite journal into PostgreSQL with its chain intact.

Rows are copied as they are (same seq, ts, body text, prev_hash and hash: nothing is re-chained),
so the target verifies with the same hashes and the source's checkpoint files. The source must
verify first; a source that does not is refused before anything is copied. Each chunk goes in
one transaction that also moves the target's chain head, so an interrupted run resumes where the
target's head is (after checking that the head is the source's event of that seq).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from relay.journal import pg_projections, signing
from relay.journal.journal import Journal
from relay.journal.opening import DB_NAME, JournalError
from relay.journal.pg import ensure_schema, redact_url
from relay.journal.projections import Record
from relay.journal.verify import blob_refs

_SELECT = ("SELECT seq, ts, kind, conversation, body_json, prev_hash, hash FROM events"
           " WHERE seq > ? ORDER BY seq LIMIT ?")


@dataclass(frozen=True)
class MigrateReport:
    copied: int
    resumed_from: int
    head: int
    head_hash: str
    blobs: int

    def line(self) -> str:
        start = f" (resumed after seq {self.resumed_from})" if self.resumed_from else ""
        return f"copied {self.copied} events{start} and {self.blobs} blobs; target head seq {self.head} hash {self.head_hash}"


def source_dir(spec: str) -> Path:
    """`sqlite:PATH`, PATH the data_dir or its journal.sqlite3."""
    if not spec.startswith("sqlite:"):
        raise JournalError(f"--from must be sqlite:PATH (the data_dir or its {DB_NAME}), not {spec!r}")
    path = Path(spec[len("sqlite:"):]).expanduser()
    if path.name == DB_NAME:
        path = path.parent
    if not (path / DB_NAME).exists():
        raise JournalError(f"no journal at {path / DB_NAME}")
    return path


async def migrate(
    source: Path,
    url: str,
    *,
    hmac_key: bytes | None = None,
    chunk: int = 2000,
    progress: Callable[[int, int], None] | None = None,
) -> MigrateReport:
    """`progress(copied so far, source head)` after every chunk."""
    src = await Journal.open(source, read_only=True, hmac_key=hmac_key)
    try:
        report = await src.verify()
        if not report.ok:
            raise JournalError(f"source {source / DB_NAME} does not verify: {report.line()}; nothing copied")
        meta = {r[0]: r[1] for r in await src.fetchall("SELECT key, value FROM meta")}
        public = signing.load_public(source / "keys")
        try:
            db = await asyncpg.connect(url, server_settings={"synchronous_commit": "on"})
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise JournalError(f"cannot connect to {redact_url(url)}: {exc}") from None
        try:
            start = await _prepare_target(db, url, meta, public)
            seq, head_hash, since = start
            if seq:
                mine = await src.fetchall("SELECT hash FROM events WHERE seq = ?", (seq,))
                if not mine or mine[0][0] != head_hash:
                    raise JournalError(
                        f"{redact_url(url)} already holds a different chain (its seq {seq} is not the source's);"
                        " migrate into an empty database"
                    )
            resumed, copied, blobs = seq, 0, 0
            while True:
                rows = [tuple(r) for r in await src.fetchall(_SELECT, (seq, chunk))]
                if not rows:
                    break
                n_blobs, since = await _copy_chunk(db, src, rows, seq, head_hash, since)
                blobs += n_blobs
                copied += len(rows)
                seq, head_hash = rows[-1][0], rows[-1][6]
                if progress is not None:
                    progress(seq, report.head)
            await _copy_kv(db, src)
        finally:
            await db.close()
    finally:
        await src.close()
    return MigrateReport(copied, resumed, seq, head_hash, blobs)


async def _prepare_target(
    db: asyncpg.Connection, url: str, meta: dict[str, str], public: str | None
) -> tuple[int, str, int]:
    async with db.transaction():
        await ensure_schema(db, redact_url(url))
        have = {r["key"]: r["value"] for r in await db.fetch("SELECT key, value FROM meta")}
        if not have:
            await db.executemany("INSERT INTO meta(key, value) VALUES($1, $2)", list(meta.items()))
        elif have != meta:
            raise JournalError(f"{redact_url(url)} is chained differently ({have.get('hash')}) from the source"
                               f" ({meta.get('hash')}, or another hmac_key)")
        if public is not None:
            await db.execute("INSERT INTO signers(public_key, first_ts) VALUES($1, extract(epoch from now()))"
                             " ON CONFLICT DO NOTHING", public)
        row = await db.fetchrow("SELECT seq, hash, since_checkpoint FROM chain_head WHERE id=1")
        return row["seq"], row["hash"], row["since_checkpoint"]


async def _copy_chunk(
    db: asyncpg.Connection, src: Journal, rows: list[tuple[Any, ...]], seq: int, head_hash: str, since: int
) -> tuple[int, int]:
    """One transaction: the chunk's blobs, events, projections and the moved head."""
    records: list[Record] = []
    wanted: set[str] = set()
    prev_seq, prev = seq, head_hash
    for r_seq, ts, kind, conversation, body_json, prev_hash, h in rows:
        if r_seq != prev_seq + 1 or prev_hash != prev:
            raise JournalError(f"source seq {r_seq} does not follow seq {prev_seq} (was the source written to"
                               " during the migration? stop the relay and run migrate again)")
        body = json.loads(body_json)
        body = body if isinstance(body, dict) else {}
        records.append((r_seq, ts, kind, conversation, body, body_json, prev_hash, h))
        wanted.update(blob_refs(body))
        since = 0 if kind == "checkpoint" else since + 1
        prev_seq, prev = r_seq, h
    blobs: list[tuple[str, bytes]] = []
    for sha in sorted(wanted):
        data = await src.get_blob(sha)
        if data is not None:  # an erased blob is gone from the source too
            blobs.append((sha, data))
    async with db.transaction():
        head = await db.fetchrow("SELECT seq, hash FROM chain_head WHERE id=1 FOR UPDATE")
        if (head["seq"], head["hash"]) != (seq, head_hash):
            raise JournalError("the target's head moved during the migration (is a relay writing to it? stop it)")
        if blobs:
            await db.executemany("INSERT INTO blobs(sha256, data) VALUES($1, $2) ON CONFLICT DO NOTHING", blobs)
        await db.copy_records_to_table(
            "events", records=rows, columns=("seq", "ts", "kind", "conversation", "body_json", "prev_hash", "hash"),
        )
        await pg_projections.apply_events(db, records)
        await db.execute("UPDATE chain_head SET seq=$1, hash=$2, since_checkpoint=$3 WHERE id=1", prev_seq, prev, since)
    return len(blobs), since


async def _copy_kv(db: asyncpg.Connection, src: Journal) -> None:
    rows = [tuple(r) for r in await src.fetchall("SELECT namespace, key, value FROM kv")]
    if rows:
        await db.executemany(
            "INSERT INTO kv(namespace, key, value) VALUES($1, $2, $3)"
            " ON CONFLICT(namespace, key) DO UPDATE SET value=excluded.value", rows,
        )

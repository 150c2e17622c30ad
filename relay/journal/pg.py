"""The journal on PostgreSQL (`journal.url`): the same contract as the SQLite journal, and one
hash chain that several relays can append to at once.

Each relay runs one writer task doing group commit, as on SQLite. What differs is where the
chain head lives: in the row `chain_head(id=1)`, locked `FOR UPDATE` at the start of every
group commit, so commits from all relays are serialised by the database and each one chains
on whatever the previous one (from any relay) wrote. The dedup check (`unless_message`) runs
under that lock too, so it holds across relays. Blobs are `bytea` rows keyed by their SHA-256.

If the connection is lost, the writer keeps the batch, reconnects with backoff and finds out
whether the lost COMMIT went through (the batch's last hash is in `events` or not) before
retrying, so callers wait through a database restart and nothing is journaled twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import random
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import asyncpg

from relay.journal import checkpoints, pg_projections, signing
from relay.journal.chain import (
    GENESIS, Event, canonical_json, fast_canonical, link_bytes, make_event,
)
from relay.journal.opening import JournalError
from relay.journal.schema import PROJECTIONS_VERSION
from relay.journal.submitting import Submitting
from relay.journal.writer import GroupCommitWriter, JournalStats, Unit as _Unit
from relay.journal.projections import Record, rows_to_events
from relay.journal.verify import ChainVerifier, VerifyReport, blob_refs, erased_blobs, erased_tombstones, load_checkpoint_files
from relay.private_files import private_dir, tighten_logged

log = logging.getLogger("relay.journal")

_KEY_CHECK = b"relay journal hmac key check"
_SCHEMA_LOCK = 7_263_517_001
"""Advisory lock key held while one relay creates the tables (two starting at once would race)."""

CORE = """
CREATE TABLE IF NOT EXISTS events(
  seq BIGINT PRIMARY KEY, ts DOUBLE PRECISION NOT NULL, kind TEXT NOT NULL, conversation TEXT,
  body_json TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS events_kind ON events(kind, seq);
CREATE INDEX IF NOT EXISTS events_hash ON events(hash);
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS kv(namespace TEXT NOT NULL, key TEXT NOT NULL, value TEXT,
  PRIMARY KEY(namespace, key));
CREATE TABLE IF NOT EXISTS chain_head(id INTEGER PRIMARY KEY CHECK (id = 1), seq BIGINT NOT NULL,
  hash TEXT NOT NULL, since_checkpoint BIGINT NOT NULL);
INSERT INTO chain_head(id, seq, hash, since_checkpoint) VALUES(1, 0, '""" + GENESIS + """', 0)
  ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS blobs(sha256 TEXT PRIMARY KEY, data BYTEA NOT NULL);
CREATE TABLE IF NOT EXISTS signers(public_key TEXT PRIMARY KEY, first_ts DOUBLE PRECISION NOT NULL);
CREATE TABLE IF NOT EXISTS relays(relay_id TEXT PRIMARY KEY, heartbeat DOUBLE PRECISION NOT NULL);
CREATE TABLE IF NOT EXISTS leases(name TEXT PRIMARY KEY, owner TEXT NOT NULL, expires DOUBLE PRECISION NOT NULL);
CREATE OR REPLACE FUNCTION json_extract(doc TEXT, path TEXT) RETURNS TEXT
  LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
  AS $$ SELECT (doc::jsonb) #>> string_to_array(substr(path, 3), '.') $$;
CREATE OR REPLACE FUNCTION instr(haystack TEXT, needle TEXT) RETURNS INTEGER
  LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$ SELECT strpos(haystack, needle) $$;
CREATE OR REPLACE FUNCTION json_each(doc TEXT) RETURNS TABLE(key TEXT, value TEXT)
  LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
  AS $$ SELECT (e.ord - 1)::text, e.v FROM jsonb_array_elements_text(doc::jsonb) WITH ORDINALITY AS e(v, ord) $$;
"""
"""`json_extract(body_json, '$.field')`, `instr` and `json_each` as SQLite spells them, so the
queries the hub and the commands share run on both backends (json_extract: top-level and dotted
object paths; json_each: of a JSON array given as text, its `value`s as text)."""

CONNECTION_ERRORS = (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
                     asyncpg.CannotConnectNowError, asyncpg.AdminShutdownError, asyncio.TimeoutError)
"""Failures of the database or the way to it, not of the batch: the writer waits and retries."""

_SELECT_EVENTS = "SELECT seq, ts, kind, conversation, body_json, prev_hash, hash FROM events"


def qmarks_to_dollars(sql: str) -> str:
    """`?` placeholders (the SQLite journal's) as `$1, $2, …`, outside quoted strings."""
    out: list[str] = []
    n = 0
    quote: str | None = None
    for ch in sql:
        if quote is not None:
            if ch == quote:
                quote = None
        elif ch in ("'", '"'):
            quote = ch
        elif ch == "?":
            n += 1
            out.append(f"${n}")
            continue
        out.append(ch)
    return "".join(out)


def redact_url(url: str) -> str:
    """The URL without its password, for error messages and logs."""
    head, sep, tail = url.partition("://")
    if "@" in tail:
        creds, _, host = tail.rpartition("@")
        user = creds.split(":", 1)[0]
        tail = f"{user}@{host}"
    return head + sep + tail


async def ensure_schema(db: asyncpg.Connection, where: str) -> None:
    """Creates what is missing, inside the caller's transaction, one relay at a time."""
    await db.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK)
    try:
        await db.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    except asyncpg.InsufficientPrivilegeError:
        raise JournalError(
            f"{where}: the pg_trgm extension is missing and this user may not create it"
            " (as a superuser: CREATE EXTENSION pg_trgm; in this database)"
        ) from None
    await db.execute(CORE)
    await db.execute(pg_projections.SCHEMA)
    # which relay's outbox sends a queued delivery (set with the event; see claim_deliveries)
    await db.execute("ALTER TABLE deliveries ADD COLUMN IF NOT EXISTS owner TEXT")


class _CheckedBlobs:
    """What ChainVerifier asks of a blob store (`check`), answered from digests fetched per chunk."""

    def __init__(self) -> None:
        self.state: dict[str, str | None] = {}

    def check(self, sha: str) -> str | None:
        return self.state.get(sha, "blob missing")


class PgJournal(Submitting, GroupCommitWriter):
    """Open with `await PgJournal.open(url, data_dir=...)`; the calls are Journal's (docs/internals.md).

    The calls that queue work (`Submitting`) and the writer task's loop, timer and checkpoint
    files (`GroupCommitWriter`) are the SQLite journal's; a batch's transaction is written here."""

    shared = True
    """Several relays may use this journal at once: the outbox claims what it sends."""

    dialect = "postgresql"
    """For the few queries that differ (search): SQLite's Journal has none, meaning "sqlite"."""

    retry_seconds = 120.0
    """How long the writer waits for a database that went away before failing its callers."""

    def __init__(self) -> None:
        raise TypeError("use `await PgJournal.open(url, ...)`")

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        data_dir: Path,
        hmac_key: bytes | None = None,
        checkpoint_every: int = 1000,
        checkpoint_seconds: float = 60.0,
        checkpoint_dir: Path | None = None,
        synchronous: str = "FULL",
        read_only: bool = False,
        max_batch: int = 10000,
        pool_size: int = 4,
        relay_id: str | None = None,
        lease_seconds: float = 10.0,
        witnesses: Sequence[Any] = (),
    ) -> PgJournal:
        """`data_dir` holds what stays local to one relay: its signing key and checkpoint files.

        `relay_id` names this relay among those sharing the database (default: host name and a
        digest of data_dir, so a restarted relay is the same one); it heartbeats every third of
        `lease_seconds`, and a relay silent for longer is taken for dead (claim_deliveries)."""
        self = object.__new__(cls)
        if checkpoint_every < 1 or max_batch < 1:
            raise JournalError("checkpoint_every and max_batch must be at least 1")
        if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise JournalError(f"journal.synchronous must be one of OFF, NORMAL, FULL, EXTRA, not {synchronous!r}")
        self.url = url
        self.data_dir = Path(data_dir)
        self.path = redact_url(url)
        self.keys_dir = self.data_dir / "keys"
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else self.data_dir / "checkpoints"
        self.read_only = read_only
        self.stats = JournalStats()
        self._hmac_key = hmac_key
        self._cp_every = checkpoint_every
        self._cp_seconds = checkpoint_seconds
        self._max_batch = max_batch
        self._queue: deque[_Unit] = deque()
        self._kind_json: dict[str, str] = {}
        self._closing = False
        self._closed = False
        self._checkpoint_due = False
        self._timer: asyncio.TimerHandle | None = None
        self._writer_task: asyncio.Task[None] | None = None
        self._db: asyncpg.Connection | None = None
        self._head_seq = 0
        self._head_hash = GENESIS
        self._since_cp = 0
        self._file_tasks: set[asyncio.Task[None]] = set()
        self.witnesses = tuple(witnesses)
        self._witness_pending: dict[str, list[dict[str, Any]]] = {}
        self._signing_key = None
        self.relay_id = relay_id or f"{socket.gethostname()}:{hashlib.sha256(str(self.data_dir.resolve()).encode()).hexdigest()[:12]}"
        self.lease_seconds = lease_seconds
        self._heartbeat_task: asyncio.Task[None] | None = None
        self.reconnects = 0
        """Times the writer reopened its connection after losing it (tests, metrics)."""
        self.unowned_channels: set[str] = set()
        """Channels whose deliveries this relay queues without owning them: connection-held ones
        whose lease another relay holds (that relay's outbox claims them)."""
        try:
            # Readers see everything committed and can change nothing, as on SQLite.
            self._pool: asyncpg.Pool = await asyncpg.create_pool(
                url, min_size=1, max_size=pool_size, server_settings={"default_transaction_read_only": "on"}
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise JournalError(f"cannot connect to the journal database {self.path}: {exc}") from None
        try:
            if read_only:
                async with self._pool.acquire() as conn:
                    if await conn.fetchval("SELECT to_regclass('chain_head')") is None:
                        raise JournalError(f"no journal in {self.path} (check journal.url)")
                    self._check_meta({r["key"]: r["value"] for r in await conn.fetch("SELECT key, value FROM meta")})
                    row = await conn.fetchrow("SELECT seq, hash, since_checkpoint FROM chain_head WHERE id=1")
                    self._head_seq, self._head_hash, self._since_cp = row["seq"], row["hash"], row["since_checkpoint"]
            else:
                private_dir(self.data_dir)  # keys and checkpoint files: private to this user
                tighten_logged(self.data_dir)
                self._signing_key = await asyncio.to_thread(signing.load_or_create, self.keys_dir)
                self._db = await self._connect_writer()
                await self._prepare()
                self._wake = asyncio.Event()
                self._writer_task = asyncio.get_running_loop().create_task(self._writer())
                if self._since_cp > 0:
                    self._arm_timer()
                await self._beat()
                self._heartbeat_task = asyncio.get_running_loop().create_task(self._heartbeat())
        except BaseException:
            if self._db is not None:
                await self._db.close()
            await self._pool.close()
            raise
        return self

    async def _connect_writer(self) -> asyncpg.Connection:
        # synchronous_commit=on: a COMMIT returns once the WAL is flushed (the contract of append).
        return await asyncpg.connect(self.url, server_settings={"synchronous_commit": "on"})

    # --- set-up -------------------------------------------------------------------------

    async def _prepare(self) -> None:
        db = self._db
        assert db is not None
        async with db.transaction():
            await ensure_schema(db, self.path)
            meta = {r["key"]: r["value"] for r in await db.fetch("SELECT key, value FROM meta")}
            if not meta:
                await db.executemany("INSERT INTO meta(key, value) VALUES($1, $2)", list(self._meta_for_key().items()))
            else:
                self._check_meta(meta)
            if meta.get("projections") != PROJECTIONS_VERSION:  # written by an older relay: replay (issue 12)
                if meta:
                    count = await self._rebuild_in(db)
                    log.info("journal projections rebuilt (version %s, %d events)", PROJECTIONS_VERSION, count)
                await db.execute("INSERT INTO meta(key, value) VALUES('projections', $1)"
                                 " ON CONFLICT(key) DO UPDATE SET value=excluded.value", PROJECTIONS_VERSION)
            public = signing.public_hex(self._signing_key.public_key())  # type: ignore[union-attr]
            await db.execute(
                "INSERT INTO signers(public_key, first_ts) VALUES($1, $2) ON CONFLICT DO NOTHING", public, time.time()
            )
            row = await db.fetchrow("SELECT seq, hash, since_checkpoint FROM chain_head WHERE id=1")
            self._head_seq, self._head_hash, self._since_cp = row["seq"], row["hash"], row["since_checkpoint"]

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

    # --- the calls callers make besides those of Submitting (as Journal's) ------------

    async def kv_get(self, namespace: str, key: str) -> str | None:
        return await self._pool.fetchval("SELECT value FROM kv WHERE namespace=$1 AND key=$2", namespace, key)

    async def checkpoint(self) -> None:
        """Sign the head now if anything is new since the last checkpoint (of any relay)."""
        since = await self._pool.fetchval("SELECT since_checkpoint FROM chain_head WHERE id=1")
        if not since:
            return
        self._checkpoint_due = True
        await self.kv_put("journal", "checkpoint_requested", repr(time.time()))

    async def put_blob(self, data: bytes) -> str:
        """Stored under its SHA-256 and committed before returning; storing twice is harmless."""
        if self.read_only:
            raise JournalError("journal was opened read-only")
        data = bytes(data)
        sha = hashlib.sha256(data).hexdigest()

        async def put(conn: asyncpg.Connection) -> None:
            async with conn.transaction():
                await conn.execute("SET TRANSACTION READ WRITE")
                await conn.execute("INSERT INTO blobs(sha256, data) VALUES($1, $2) ON CONFLICT DO NOTHING", sha, data)

        await self._with_retry(put)
        return sha

    async def delete_blobs(self, shas: list[str]) -> int:
        """Erasure: the bytes go, the digests stay in the events; returns how many were stored."""
        if self.read_only:
            raise JournalError("journal was opened read-only")

        async def delete(conn: asyncpg.Connection) -> int:
            async with conn.transaction():
                await conn.execute("SET TRANSACTION READ WRITE")
                done = await conn.execute("DELETE FROM blobs WHERE sha256 = ANY($1::text[])", shas)
            return int(done.split()[-1])

        return int(await self._with_retry(delete))

    async def _beat(self, alive: bool = True) -> None:
        """The database's clock, not this host's: relays on several hosts compare one clock."""
        async def beat(conn: asyncpg.Connection) -> None:
            async with conn.transaction():
                await conn.execute("SET TRANSACTION READ WRITE")
                await conn.execute(
                    "INSERT INTO relays(relay_id, heartbeat) VALUES($1, CASE WHEN $2 THEN"
                    " extract(epoch from clock_timestamp()) ELSE 0 END) ON CONFLICT(relay_id) DO UPDATE"
                    " SET heartbeat=excluded.heartbeat", self.relay_id, alive)

        await self._with_retry(beat)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            try:
                await self._beat()
            except (JournalError, asyncpg.PostgresError) as exc:
                log.warning("journal: heartbeat failed: %r", exc)

    async def claim_deliveries(self, include_own: bool, exclude_channels: Any = ()) -> list[asyncpg.Record]:
        """Queued deliveries this relay's outbox should now send, taken over in the database: ones
        of relays silent past the lease (or gone), ones without an owner, and with `include_own`
        this relay's own (after a restart). Rows locked by another claim are skipped, so no two
        relays take the same delivery. None for `exclude_channels`. In seq order."""
        if self.read_only:
            raise JournalError("journal was opened read-only")

        async def claim(conn: asyncpg.Connection) -> list[asyncpg.Record]:
            async with conn.transaction():
                await conn.execute("SET TRANSACTION READ WRITE")
                rows = await conn.fetch(
                    "UPDATE deliveries d SET owner=$1 FROM ("
                    " SELECT delivery_id FROM deliveries WHERE state='queued' AND (owner IS NULL"
                    " OR ($2 AND owner=$1) OR (owner<>$1 AND owner NOT IN (SELECT relay_id FROM relays"
                    "  WHERE heartbeat >= extract(epoch from clock_timestamp()) - $3)))"
                    " AND NOT (channel = ANY($4::text[]))"
                    " ORDER BY seq FOR UPDATE SKIP LOCKED) c WHERE d.delivery_id = c.delivery_id"
                    " RETURNING d.delivery_id, d.message_id, d.conversation, d.channel, d.to_json, d.out_json,"
                    " d.attempts, d.seq, (SELECT e.ts FROM events e WHERE e.seq = d.seq) AS queued_ts",
                    self.relay_id, include_own, self.lease_seconds, sorted(exclude_channels),
                )
            return sorted(rows, key=lambda r: r["seq"])

        return list(await self._with_retry(claim))

    async def earlier_queued_elsewhere(self, delivery_id: str) -> bool:
        """Whether an earlier delivery to the same recipient in the same conversation is still
        queued and not this relay's (the outbox holds this one back until it is sent)."""
        async def probe(conn: asyncpg.Connection) -> bool:
            return bool(await conn.fetchval(
                "SELECT EXISTS(SELECT 1 FROM deliveries d JOIN deliveries o ON o.conversation = d.conversation"
                " AND o.channel = d.channel AND o.to_json = d.to_json AND o.seq < d.seq"
                " WHERE d.delivery_id = $1 AND o.state = 'queued' AND o.owner IS DISTINCT FROM $2)",
                delivery_id, self.relay_id,
            ))

        return bool(await self._with_retry(probe))

    async def delivery_seqs(self, delivery_ids: list[str]) -> dict[str, int]:
        """The journal position of each delivery's `delivery.queued` (to put lanes in order)."""
        async def fetch(conn: asyncpg.Connection) -> dict[str, int]:
            rows = await conn.fetch("SELECT delivery_id, seq FROM deliveries WHERE delivery_id = ANY($1::text[])",
                                    delivery_ids)
            return {r["delivery_id"]: int(r["seq"]) for r in rows}

        return dict(await self._with_retry(fetch))

    async def release_deliveries(self, delivery_ids: list[str]) -> None:
        """Give up queued deliveries this relay owns (for another relay's outbox to claim)."""
        async def release(conn: asyncpg.Connection) -> None:
            async with conn.transaction():
                await conn.execute("SET TRANSACTION READ WRITE")
                await conn.execute("UPDATE deliveries SET owner=NULL WHERE owner=$1 AND state='queued'"
                                   " AND delivery_id = ANY($2::text[])", self.relay_id, delivery_ids)

        await self._with_retry(release)

    async def hold_lease(self, name: str) -> bool:
        """Take or renew the lease `name` for `lease_seconds` (the database's clock); False while
        another relay holds it unexpired. Renewed by the holder every third of the lease."""
        async def take(conn: asyncpg.Connection) -> bool:
            async with conn.transaction():
                await conn.execute("SET TRANSACTION READ WRITE")
                owner = await conn.fetchval(
                    "INSERT INTO leases(name, owner, expires) VALUES($1, $2, extract(epoch from clock_timestamp()) + $3)"
                    " ON CONFLICT(name) DO UPDATE SET owner=excluded.owner, expires=excluded.expires"
                    " WHERE leases.owner = excluded.owner OR leases.expires < extract(epoch from clock_timestamp())"
                    " RETURNING owner", name, self.relay_id, self.lease_seconds,
                )
            return owner == self.relay_id

        return bool(await self._with_retry(take))

    async def release_leases(self) -> None:
        """On a clean stop: the others need not wait for the leases to run out."""
        async def release(conn: asyncpg.Connection) -> None:
            async with conn.transaction():
                await conn.execute("SET TRANSACTION READ WRITE")
                await conn.execute("DELETE FROM leases WHERE owner=$1", self.relay_id)

        await self._with_retry(release)

    async def get_blob(self, sha: str) -> bytes | None:
        return await self._pool.fetchval("SELECT data FROM blobs WHERE sha256=$1", sha)

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        """A query in PostgreSQL's dialect (`$1` placeholders) on the reading pool."""
        return list(await self._pool.fetch(sql, *args))

    async def fetchall(self, sql: str, params: tuple[Any, ...] = ()) -> list[asyncpg.Record]:
        """Journal.fetchall's signature: `?` placeholders become `$n`; the SQL must also be valid
        PostgreSQL (rows are asyncpg Records: by index and by name, as sqlite3.Row)."""
        return list(await self._pool.fetch(qmarks_to_dollars(sql), *params))

    @property
    def head(self) -> tuple[int, str]:
        """(seq, hash) of the last event this relay committed or saw at open."""
        return self._head_seq, self._head_hash

    async def _with_retry(self, fn: Any) -> Any:
        deadline = time.monotonic() + self.retry_seconds
        delay = 0.05
        while True:
            try:
                async with self._pool.acquire() as conn:
                    return await fn(conn)
            except CONNECTION_ERRORS as exc:
                if time.monotonic() > deadline or self._closed:
                    raise JournalError(f"journal database {self.path} unreachable: {exc!r}") from None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    # --- the writer task ----------------------------------------------------------------

    async def _commit_next(self) -> None:
        units, force = self._take_batch()
        try:
            results, record = await self._commit_retrying(units, force)
        except Exception as exc:
            log.error("journal commit failed: %r", exc)
            for unit in units:
                if not unit.future.done():
                    unit.future.set_exception(exc)
            return
        for unit, result in zip(units, results):
            if not unit.future.done():
                unit.future.set_result(result[0] if unit.single and result is not None else result)
        if record is not None:
            task = asyncio.get_running_loop().create_task(self._file_checkpoint(record))
            self._file_tasks.add(task)
            task.add_done_callback(self._file_tasks.discard)
        if self._since_cp > 0 and self._timer is None and not self._closing:
            self._arm_timer()

    async def _commit_retrying(self, units: list[_Unit], force: bool) -> tuple[list[Any], dict[str, Any] | None]:
        """One attempt per connection; a lost connection is reopened (with backoff) and, if the
        lost attempt had reached COMMIT, its outcome read back instead of writing it again."""
        deadline = time.monotonic() + self.retry_seconds
        delay = 0.05
        attempt: list[Any] = []
        while True:
            try:
                if self._db is None or self._db.is_closed():
                    self._db = await self._connect_writer()
                    self.reconnects += 1
                if attempt and await self._db.fetchval("SELECT 1 FROM events WHERE hash=$1", attempt[0]):
                    return attempt[1], attempt[2]
                attempt.clear()
                return await self._write_batch(self._db, units, force, attempt)
            except CONNECTION_ERRORS as exc:
                if self._db is not None:
                    self._db.terminate()
                    self._db = None
                if time.monotonic() > deadline:
                    raise JournalError(f"journal database {self.path} unreachable for {self.retry_seconds:.0f}s: {exc!r}") from None
                log.warning("journal database unreachable (%r); retrying in %.2fs", exc, delay)
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 2.0)

    async def _write_batch(
        self, db: asyncpg.Connection, units: list[_Unit], force_checkpoint: bool, attempt: list[Any]
    ) -> tuple[list[Any], dict[str, Any] | None]:
        """One transaction for the batch, under the chain-head row lock (serialising all relays).

        `attempt` gets (last hash, results, checkpoint record) just before COMMIT, so a retry
        after a lost connection can tell whether this transaction committed.
        """
        key = self._hmac_key
        sha256 = hashlib.sha256
        results: list[Any] = []
        checkpoint_record: dict[str, Any] | None = None
        tr = db.transaction()
        await tr.start()
        try:
            head = await db.fetchrow("SELECT seq, hash, since_checkpoint FROM chain_head WHERE id=1 FOR UPDATE")
            seq, prev, since_cp = head["seq"], head["hash"], head["since_checkpoint"]
            wanted = [u.unless for u in units if u.unless is not None]
            present: set[str] = set()
            if wanted:
                present = {r[0] for r in await db.fetch("SELECT id FROM messages WHERE id = ANY($1::text[])", wanted)}
            rows: list[tuple[Any, ...]] = []
            events: list[Record] = []
            for unit in units:
                if unit.unless is not None:
                    if unit.unless in present:
                        results.append(None)
                        continue
                    present.add(unit.unless)
                out: list[Event] = []
                for kind, conversation, body_json, body, ts, head_part, tail in unit.items:
                    seq += 1
                    data = link_bytes(prev, head_part, seq, tail)
                    h = sha256(data).hexdigest() if key is None else hmac.digest(key, data, "sha256").hex()
                    rows.append((seq, ts, kind, conversation, body_json, prev, h))
                    events.append((seq, ts, kind, conversation, body, body_json, prev, h))
                    out.append(make_event(seq, ts, kind, conversation, body, prev, h))
                    prev = h
                results.append(out)
            since = since_cp + len(events)
            checkpoint: Event | None = None
            if since >= self._cp_every or (force_checkpoint and since > 0):
                body = signing.sign_checkpoint(self._signing_key, seq, prev)  # type: ignore[arg-type]
                ts = time.time()
                seq += 1
                body_json = canonical_json(body)
                data = prev.encode() + fast_canonical(seq, ts, '"checkpoint"', "null", body_json)
                h = sha256(data).hexdigest() if key is None else hmac.digest(key, data, "sha256").hex()
                rows.append((seq, ts, "checkpoint", None, body_json, prev, h))
                checkpoint = Event(seq, ts, "checkpoint", None, body, prev, h)
                prev = h
            if rows:
                await db.copy_records_to_table(
                    "events", records=rows,
                    columns=("seq", "ts", "kind", "conversation", "body_json", "prev_hash", "hash"),
                )
                errors = await pg_projections.apply_events(db, events)
                queued = [ev[0] for ev in events if ev[2] == "delivery.queued"
                          and ev[4].get("channel") not in self.unowned_channels]
                if queued:
                    await db.execute("UPDATE deliveries SET owner=$1 WHERE seq = ANY($2::bigint[])", self.relay_id, queued)
                await db.execute(
                    "UPDATE chain_head SET seq=$1, hash=$2, since_checkpoint=$3 WHERE id=1",
                    seq, prev, 0 if checkpoint is not None else since,
                )
            else:
                errors = 0
            for i, unit in enumerate(units):
                if unit.kv is not None:
                    ns, k, v = unit.kv
                    if v is None:
                        await db.execute("DELETE FROM kv WHERE namespace=$1 AND key=$2", ns, k)
                    else:
                        await db.execute(
                            "INSERT INTO kv(namespace, key, value) VALUES($1,$2,$3)"
                            " ON CONFLICT(namespace, key) DO UPDATE SET value=excluded.value", ns, k, v,
                        )
                elif unit.rebuild:
                    results[i] = await self._rebuild_in(db)
            if checkpoint is not None:
                checkpoint_record = dict(checkpoint.body, seq=checkpoint.seq, hash=checkpoint.hash, ts=checkpoint.ts)
            if rows:
                attempt[:] = [prev, results, checkpoint_record]
            await tr.commit()
        except BaseException:
            if not db.is_closed():
                try:
                    await tr.rollback()
                except CONNECTION_ERRORS:
                    pass
            raise
        self._head_seq, self._head_hash = seq, prev
        self._since_cp = 0 if checkpoint is not None else since
        self.stats.projection_errors += errors
        if rows:
            self.stats.commits += 1
            self.stats.events += len(rows)
            self.stats.largest_batch = max(self.stats.largest_batch, len(rows))
        if checkpoint is not None:
            self.stats.checkpoints += 1
        return results, checkpoint_record

    async def _rebuild_in(self, db: asyncpg.Connection, chunk: int = 2000) -> int:
        # who sends which queued delivery is not in the events: kept across the rebuild
        owners = [tuple(r) for r in await db.fetch("SELECT delivery_id, owner FROM deliveries WHERE owner IS NOT NULL")]
        await db.execute("TRUNCATE " + ", ".join(pg_projections.TABLES))
        count = 0
        last = 0
        while True:
            rows = await db.fetch(_SELECT_EVENTS + " WHERE seq > $1 ORDER BY seq LIMIT $2", last, chunk)
            if not rows:
                if owners:
                    await db.executemany("UPDATE deliveries SET owner=$2 WHERE delivery_id=$1", owners)
                return count
            records: list[Record] = []
            for ev in rows_to_events(tuple(r) for r in rows):
                records.append((ev.seq, ev.ts, ev.kind, ev.conversation, ev.body, "", ev.prev_hash, ev.hash))
            self.stats.projection_errors += await pg_projections.apply_events(db, records)
            count += len(rows)
            last = rows[-1][0]

    # --- reading and checking -----------------------------------------------------------

    async def verify_recorded(self, *, full: bool = False, witnesses: Sequence[Any] = ()) -> VerifyReport:
        """Always the whole chain here: incremental verify and `--witness` are the SQLite journal's for now."""
        if witnesses:
            raise JournalError("verify --witness reads witnesses for the SQLite journal only (not yet on PostgreSQL)")
        return await self.verify()

    async def verify(self, chunk: int = 2000) -> VerifyReport:
        """Whole chain from seq 1 in one snapshot, every named blob, checkpoints signed by a key
        registered in `signers` (each relay registers its own), this relay's checkpoint files."""
        records = await asyncio.to_thread(checkpoints.read_all, self.checkpoint_dir)
        async with self._pool.acquire() as db:
            async with db.transaction(isolation="repeatable_read", readonly=True):
                known_keys = {r[0] for r in await db.fetch("SELECT public_key FROM signers")}
                files, bad = load_checkpoint_files(records, known_keys or None)
                if bad is not None:
                    return bad
                erased_rows = [(r[0], r[1]) for r in await db.fetch(
                    "SELECT seq, body_json FROM events WHERE kind='retention.erased'")]
                blobs = _CheckedBlobs()
                verifier = ChainVerifier(
                    key=self._hmac_key, blobs=blobs, erased=erased_blobs(erased_rows), files=files,
                    known_keys=known_keys or None, tombstones=erased_tombstones(erased_rows),
                )
                cursor = await db.cursor(_SELECT_EVENTS + " ORDER BY seq")
                while rows := await cursor.fetch(chunk):
                    plain = [tuple(r) for r in rows]
                    await self._check_blobs(db, plain, blobs)
                    if not await asyncio.to_thread(verifier.feed, plain):
                        break
        return verifier.finish()

    @staticmethod
    async def _check_blobs(db: asyncpg.Connection, rows: list[tuple[Any, ...]], blobs: _CheckedBlobs) -> None:
        import json

        wanted: set[str] = set()
        for row in rows:
            try:
                wanted.update(blob_refs(json.loads(row[4])))
            except ValueError:
                continue
        wanted -= blobs.state.keys()
        if not wanted:
            return
        found = await db.fetch(
            "SELECT sha256, encode(sha256(data), 'hex') = sha256 FROM blobs WHERE sha256 = ANY($1::text[])",
            list(wanted),
        )
        for sha, ok in found:
            blobs.state[sha] = None if ok else "blob changed"

    async def iter_events(
        self, where: str = "", params: tuple[Any, ...] = (), limit: int | None = None, chunk: int = 1000
    ) -> AsyncIterator[Event]:
        """Events in seq order, streamed (`where`: a condition valid in PostgreSQL; `?` allowed)."""
        sql = _SELECT_EVENTS + (f" WHERE {qmarks_to_dollars(where)}" if where else "") + " ORDER BY seq"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        async with self._pool.acquire() as db:
            async with db.transaction(isolation="repeatable_read", readonly=True):
                cursor = await db.cursor(sql, *params)
                while rows := await cursor.fetch(chunk):
                    for ev in rows_to_events(tuple(r) for r in rows):
                        yield ev

    async def close(self) -> None:
        """Drains queued appends, writes a final checkpoint if there are new events, closes."""
        if self._closed:
            return
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._heartbeat_task is not None:
            self._heartbeat_task.cancel()
            await asyncio.gather(self._heartbeat_task, return_exceptions=True)
        try:
            if self._writer_task is not None:
                self._wake.set()
                await self._writer_task
                try:  # gone: the others may take over what this relay's outbox left queued
                    await asyncio.wait_for(self._beat(alive=False), 5)
                    await asyncio.wait_for(self.release_leases(), 5)
                except (JournalError, asyncpg.PostgresError, asyncio.TimeoutError, OSError) as exc:
                    log.warning("journal: could not sign off: %r", exc)
            if self._file_tasks:
                await asyncio.gather(*self._file_tasks)
        finally:
            self._closed = True
            if self._db is not None:
                await self._db.close()
            await self._pool.close()

    async def __aenter__(self) -> PgJournal:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

"""Opening a journal file: the writer lock, SQLite pragmas, the schema and the key check.

Everything here runs once per open and decides whether the file may be used at all; the
hot path (the writer task) never comes back to it.
"""

from __future__ import annotations

import fcntl
import hmac
import logging
import os
from pathlib import Path
from typing import IO

import aiosqlite

from relay.journal import lookups, projections, schema
from relay.private_files import open_private
from relay.journal.chain import GENESIS

log = logging.getLogger("relay.journal")

DB_NAME = "journal.sqlite3"
LOCK_NAME = "journal.lock"
SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")
_KEY_CHECK = b"relay journal hmac key check"


class JournalError(Exception):
    """A journal that cannot be opened or used as asked; the message says what to do."""


def take_writer_lock(path: Path) -> IO[bytes]:
    """One writer per journal: a second one would fork the chain (same seq, different events)."""
    f = os.fdopen(open_private(path, os.O_RDWR | os.O_APPEND), "a+b")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise JournalError(f"{path.parent} is in use by another relay process (stop it first)") from None
    return f


async def prepare_writer(db: aiosqlite.Connection, path: Path, sync: str, hmac_key: bytes | None,
                         checkpoint_every: int) -> tuple[int, str, int]:
    """Pragmas, schema and key check on the writer connection; returns (head seq, head hash,
    events since the last checkpoint)."""
    head_seq, head_hash = 0, GENESIS
    await db.execute("PRAGMA busy_timeout=30000")
    mode = (await db.execute_fetchall("PRAGMA journal_mode=WAL"))[0][0]
    if str(mode).lower() != "wal":
        raise JournalError(f"{path}: cannot switch to WAL mode (got {mode})")
    await db.execute(f"PRAGMA synchronous={sync}")
    await db.execute("PRAGMA wal_autocheckpoint=0")
    await db.execute("PRAGMA cache_size=-65536")  # 64 MiB: hot index pages stay cached between commits
    await db.executescript(schema.CORE)
    meta = dict(await db.execute_fetchall("SELECT key, value FROM meta"))
    if not meta:
        await db.executemany("INSERT INTO meta(key, value) VALUES(?, ?)", list(meta_for_key(hmac_key).items()))
    else:
        check_meta(meta, hmac_key, path)
    await db._execute(projections.upgrade, db._conn)
    rows = await db.execute_fetchall("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1")
    if rows:
        head_seq, head_hash = rows[0][0], rows[0][1]
    last_cp = await db.execute_fetchall(lookups.LAST_CHECKPOINT)
    since_cp = min(head_seq - (last_cp[0][0] or 0), checkpoint_every)  # by index, not a walk back
    return head_seq, head_hash, since_cp


def meta_for_key(hmac_key: bytes | None) -> dict[str, str]:
    if hmac_key is None:
        return {"hash": "sha256"}
    return {"hash": "hmac-sha256", "hmac_check": hmac.digest(hmac_key, _KEY_CHECK, "sha256").hex()}


def check_meta(meta: dict[str, str], hmac_key: bytes | None, path: Path) -> None:
    want = meta_for_key(hmac_key)
    if meta.get("hash") == "hmac-sha256" and hmac_key is None:
        raise JournalError(f"{path} is chained with HMAC: set journal.hmac_key")
    if meta.get("hash") == "sha256" and hmac_key is not None:
        raise JournalError(f"{path} is chained without HMAC: remove journal.hmac_key")
    if meta.get("hmac_check") != want.get("hmac_check"):
        raise JournalError(f"journal.hmac_key is not the key {path} was written with")


async def check_meta_readonly(reader: aiosqlite.Connection, hmac_key: bytes | None, path: Path) -> None:
    rows = await reader.execute_fetchall("SELECT key, value FROM meta")
    meta = {r[0]: r[1] for r in rows}
    check_meta(meta, hmac_key, path)
    if meta.get("projections") != schema.PROJECTIONS_VERSION:  # events, verify and export still work
        log.warning("%s has projections of an older relay (version %s, this relay reads %s): reviews may not"
                    " load until `relay journal rebuild` runs once, or the relay starts (it upgrades them)",
                    path, meta.get("projections", "1"), schema.PROJECTIONS_VERSION)

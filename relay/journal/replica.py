"""The WORM copy: events, blobs and checkpoints copied in order, resumably, to storage apart
from the journal (SEC 17a-4(f)(3)(iii): a backup kept apart from the original).

Copying goes in batches after the copy's head: first the blobs the batch's events name, then
its checkpoint records (and RFC 3161 replies), then the batch itself as one segment
`events/<first>-<last>.jsonl` of the rows exactly as stored. A segment is written last, so
the copy's head (its newest segment) never names what is not there; a crash repeats at most
one batch, and nothing is ever overwritten (files are created exclusively and made read-only).
`verify_replica` checks the copy's own chain and that it agrees with the journal;
`restore` rebuilds a journal from it.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from relay.journal import checkpoints, projections, schema, signing, tsa
from relay.journal.blobs import BlobStore, fsync_dir, is_sha256, write_durably
from relay.journal.opening import DB_NAME, JournalError
from relay.journal.verify import (ChainVerifier, CheckpointFile, VerifyReport, blob_refs, erased_blobs,
                                  erased_tombstones, load_checkpoint_files)

BATCH = 5000
_SEGMENT = re.compile(r"^(\d{12})-(\d{12})\.jsonl$")
_COLUMNS = ("seq", "ts", "kind", "conversation", "body_json", "prev_hash", "hash")


class ReplicaError(Exception):
    """The copy cannot be written or read as asked; the message names the file."""


class ReplicaTarget(Protocol):
    """Where the copy lives; blocking calls, run in a worker thread. Writes never overwrite."""

    name: str

    def put(self, key: str, data: bytes, record_class: str) -> None: ...
    def get(self, key: str) -> bytes | None: ...
    def list(self, prefix: str) -> list[str]:
        """Every key under `prefix/`, sorted."""
        ...


class DirectoryTarget:
    """A second directory (another disk or mount): files 0400 once written, dirs 0700."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.name = str(root)

    def put(self, key: str, data: bytes, record_class: str = "") -> None:
        path = self.root / key
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if path.exists():
            if path.read_bytes() == data:
                return  # a batch repeated after a crash: the same bytes
            raise ReplicaError(f"{path} exists with other content: the copy is not this journal's (WORM: not overwritten)")
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)  # fails if another copier got there first: never replaces a file
        except FileExistsError:
            if path.read_bytes() != data:
                raise ReplicaError(f"{path} was written with other content meanwhile (WORM: not overwritten)") from None
        finally:
            os.unlink(tmp)
        os.chmod(path, 0o400)
        fsync_dir(path.parent)

    def get(self, key: str) -> bytes | None:
        try:
            return (self.root / key).read_bytes()
        except FileNotFoundError:
            return None

    def list(self, prefix: str) -> list[str]:
        """Every file under `prefix`, as keys, sorted."""
        d = self.root / prefix
        if not d.is_dir():
            return []
        return sorted(str(p.relative_to(self.root)) for p in d.rglob("*") if p.is_file() and not p.name.startswith("."))


YEAR = 365.25 * 86400
_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(y|mo|w|d|h|m|s)\s*$")
_UNITS = {"y": YEAR, "mo": YEAR / 12, "w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}
RECORD_CLASSES = ("event", "blob", "checkpoint", "meta")
DEFAULT_RETAIN = 6 * YEAR
"""SEA 17a-4(b)(4) / FINRA 4511: six years; set `retain` to the longest period your records need."""


def _duration(value: Any, where: str) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    m = _DURATION.match(str(value))
    if not m:
        raise ReplicaError(f"{where}: {value!r} is not a duration (e.g. 7y, 90d, 24h)")
    return float(m.group(1)) * _UNITS[m.group(2)]


class S3Target:
    """An S3 bucket with Object Lock: each object is written once in COMPLIANCE mode with the
    retain-until date of its record class (nobody, root account included, can delete or shorten
    it before then). boto3 is the client: the SDK that speaks S3's signing and checksums."""

    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None, region: str | None = None,
                 access_key_id: str | None = None, secret_access_key: str | None = None,
                 retain: dict[str, float] | None = None, mode: str = "COMPLIANCE") -> None:
        import boto3
        from botocore.config import Config as BotoConfig

        self.bucket, self.prefix = bucket, prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.name = f"s3://{bucket}/{self.prefix}"
        self.retain = {c: DEFAULT_RETAIN for c in RECORD_CLASSES} | (retain or {})
        self.mode = mode
        self.connection = {"endpoint_url": endpoint_url, "region": region, "access_key_id": access_key_id,
                           "secret_access_key": secret_access_key}
        self.client = boto3.client("s3", endpoint_url=endpoint_url, region_name=region or "us-east-1",
                                   aws_access_key_id=access_key_id, aws_secret_access_key=secret_access_key,
                                   config=BotoConfig(retries={"max_attempts": 5, "mode": "standard"}))

    def put(self, key: str, data: bytes, record_class: str = "event") -> None:
        import datetime

        existing = self.get(key)
        if existing is not None:
            if existing == data:
                return
            raise ReplicaError(f"{self.name}{key} exists with other content: the copy is not this journal's")
        until = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(
            seconds=self.retain.get(record_class, DEFAULT_RETAIN))
        self.client.put_object(Bucket=self.bucket, Key=self.prefix + key, Body=data, ObjectLockMode=self.mode,
                               ObjectLockRetainUntilDate=until, ChecksumAlgorithm="SHA256")

    def get(self, key: str) -> bytes | None:
        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=self.prefix + key)
        except self.client.exceptions.NoSuchKey:
            return None
        return resp["Body"].read()

    def list(self, prefix: str) -> list[str]:
        keys: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=f"{self.prefix}{prefix}/"):
            keys += [o["Key"][len(self.prefix):] for o in page.get("Contents", ())]
        return sorted(keys)


def target_for(spec: str | Path, configured: ReplicaTarget | None = None) -> ReplicaTarget:
    """A directory, or `s3://bucket/prefix` (endpoint and keys from the configured S3 copy or
    the usual AWS_* environment)."""
    text = str(spec)
    if text.startswith("s3://"):
        bucket, _, prefix = text[5:].partition("/")
        if isinstance(configured, S3Target):
            return S3Target(bucket, prefix, retain=configured.retain, **configured.connection)
        return S3Target(bucket, prefix)
    return DirectoryTarget(Path(spec).expanduser().resolve())


def target_from_config(block: Any, base: Path, where: str = "journal.replica") -> ReplicaTarget | None:
    """`journal.replica: {type: directory, path: DIR, every: 1m}` → the target (None if unset)."""
    if block is None:
        return None
    if not isinstance(block, dict):
        raise ReplicaError(f"{where} must be a mapping")
    kind = block.get("type", "directory")
    if kind == "s3":
        if not block.get("bucket"):
            raise ReplicaError(f"{where}: an s3 copy needs bucket")
        retain = {}
        for cls, value in (block.get("retain") or {}).items():
            if cls not in RECORD_CLASSES:
                raise ReplicaError(f"{where}.retain.{cls}: not a record class ({', '.join(RECORD_CLASSES)})")
            retain[cls] = _duration(value, f"{where}.retain.{cls}")
        return S3Target(str(block["bucket"]), str(block.get("prefix", "")), endpoint_url=block.get("endpoint_url"),
                        region=block.get("region"), access_key_id=block.get("access_key_id"),
                        secret_access_key=block.get("secret_access_key"), retain=retain)
    if kind != "directory":
        raise ReplicaError(f"{where}.type: {kind!r} is not supported (directory, s3)")
    if not block.get("path"):
        raise ReplicaError(f"{where}: directory copy needs path")
    p = Path(str(block["path"])).expanduser()
    return DirectoryTarget(p if p.is_absolute() else (base / p).resolve())


def segments(target: ReplicaTarget) -> list[tuple[int, int, str]]:
    out = []
    for key in target.list("events"):
        m = _SEGMENT.match(key.rsplit("/", 1)[-1])
        if m:
            out.append((int(m.group(1)), int(m.group(2)), key))
    return sorted(out)


def copied_head(target: ReplicaTarget) -> int:
    segs = segments(target)
    return segs[-1][1] if segs else 0


@dataclass(frozen=True)
class SyncResult:
    copied_events: int
    copied_blobs: int
    head: int

    def to_dict(self) -> dict[str, Any]:
        return {"copied_events": self.copied_events, "copied_blobs": self.copied_blobs, "head": self.head}


def _meta(db: sqlite3.Connection, keys_dir: Path) -> bytes:
    meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
    pub = signing.load_public(keys_dir)
    return json.dumps({"meta": meta, "public_key": pub, "format": "relay-replica/1"}, sort_keys=True).encode()


def record_class_of(kind: str) -> str:
    """Which retention class a record falls in, for storage that keeps each class its own time."""
    return "checkpoint" if kind == "checkpoint" else "event"


def sync_blocking(db_path: Path, blobs: BlobStore, keys_dir: Path, checkpoint_dir: Path,
                  target: ReplicaTarget, batch: int = BATCH, limit: int | None = None) -> SyncResult:
    """Copy everything after the copy's head; returns what was copied (read-only on the journal)."""
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        meta = _meta(db, keys_dir)
        existing = target.get("meta.json")
        if existing is None:
            target.put("meta.json", meta, "meta")
        elif json.loads(existing).get("meta") != json.loads(meta).get("meta"):
            raise ReplicaError(f"{target.name}: meta.json is another journal's (hash settings differ)")
        head = copied_head(target)
        events = blob_count = 0
        while limit is None or events < limit:
            rows = db.execute("SELECT seq, ts, kind, conversation, body_json, prev_hash, hash FROM events"
                              " WHERE seq > ? ORDER BY seq LIMIT ?", (head, batch)).fetchall()
            if not rows:
                break
            if rows[0][0] != head + 1:
                raise ReplicaError(f"{target.name}: the copy ends at seq {head} but the journal's next row is seq {rows[0][0]}")
            lines = []
            for row in rows:
                seq, ts, kind, conversation, body_json, prev_hash, hash_ = row
                body = json.loads(body_json) if kind == "checkpoint" or "sha256\":\"" in body_json else None
                for sha in blob_refs(body):
                    key = f"blobs/{sha[:2]}/{sha}"
                    data = blobs.get(sha)
                    if data is not None and target.get(key) is None:
                        target.put(key, data, "blob")
                        blob_count += 1
                if kind == "checkpoint" and isinstance(body, dict):
                    record = dict(body, seq=seq, hash=hash_, ts=ts)
                    target.put(f"checkpoints/{checkpoints.file_name(seq)}",
                               json.dumps(record, sort_keys=True, indent=1).encode(), "checkpoint")
                    token = checkpoint_dir / tsa.token_name(seq)
                    if token.exists():
                        target.put(f"checkpoints/{tsa.token_name(seq)}", token.read_bytes(), "checkpoint")
                lines.append(json.dumps(dict(zip(_COLUMNS, row)), ensure_ascii=False, sort_keys=True))
            first, last = rows[0][0], rows[-1][0]
            target.put(f"events/{first:012d}-{last:012d}.jsonl", ("\n".join(lines) + "\n").encode(),
                       "event")
            head = last
            events += len(rows)
        return SyncResult(events, blob_count, head)
    finally:
        db.close()


async def sync(journal: Any, target: ReplicaTarget, batch: int = BATCH) -> SyncResult:
    """`sync_blocking` for an open Journal, off the event loop."""
    return await asyncio.to_thread(sync_blocking, journal.path, journal.blobs, journal.keys_dir,
                                   journal.checkpoint_dir, target, batch)


def iter_rows(target: ReplicaTarget) -> Iterator[tuple[Any, ...]]:
    """Every copied row in seq order, as stored in the journal."""
    for _, _, key in segments(target):
        data = target.get(key)
        if data is None:
            raise ReplicaError(f"{target.name}: {key} vanished while reading")
        for line in data.decode().splitlines():
            if line:
                doc = json.loads(line)
                yield tuple(doc[c] for c in _COLUMNS)


class _TargetBlobs(BlobStore):
    """The copy's blobs, checked as the journal's are."""

    def __init__(self, target: ReplicaTarget) -> None:
        self.target = target

    def check(self, sha: str) -> str | None:
        import hashlib

        if not is_sha256(sha):
            return "blob missing"
        data = self.target.get(f"blobs/{sha[:2]}/{sha}")
        if data is None:
            return "blob missing"
        return None if hashlib.sha256(data).hexdigest() == sha else "blob changed"


def _checkpoint_files(target: ReplicaTarget, known: set[str] | None) -> tuple[list[CheckpointFile], VerifyReport | None]:
    records = []
    for key in target.list("checkpoints"):
        if key.endswith(".json"):
            try:
                records.append((Path(key), json.loads(target.get(key) or b"{}")))
            except ValueError:
                records.append((Path(key), {}))
    return load_checkpoint_files(records, known)


def verify_copy_blocking(target: ReplicaTarget, hmac_key: bytes | None, journal_db: Path | None,
                         journal_public: str | None) -> VerifyReport:
    """The copy's own chain, blobs and checkpoints; then, with `journal_db`, that every copied
    seq has the journal's hash (problem `replica mismatch`) and the journal still has them all."""
    meta_raw = target.get("meta.json")
    if meta_raw is None:
        return VerifyReport(False, 0, 0, None, "replica mismatch", f"{target.name}: no meta.json: not a relay copy")
    meta = json.loads(meta_raw)
    public = meta.get("public_key")
    if journal_public is not None and public != journal_public:
        return VerifyReport(False, 0, 0, None, "replica mismatch",
                            f"{target.name} is signed by key {public}, the journal's is {journal_public}")
    known = {public} if public else None
    files, bad = _checkpoint_files(target, known)
    if bad is not None:
        return bad
    head = copied_head(target)
    files = [f for f in files if int(f.record["seq"]) <= head]  # past the head: a batch still being copied
    # two passes over the segments: erasures must be known before the chain is fed
    erased = [(r[0], r[4]) for r in iter_rows(target) if r[2] == "retention.erased"]
    verifier = ChainVerifier(key=hmac_key, blobs=_TargetBlobs(target), erased=erased_blobs(erased), files=files,
                             known_keys=known, tombstones=erased_tombstones(erased))
    db = sqlite3.connect(f"file:{journal_db}?mode=ro", uri=True) if journal_db is not None else None
    try:
        journal_head = (db.execute("SELECT MAX(seq) FROM events").fetchone()[0] or 0) if db is not None else 0

        def check(chunk: list[tuple[Any, ...]]) -> VerifyReport | None:
            if not verifier.feed(chunk):
                return verifier.finish()
            return _compare(db, chunk, journal_head) if db is not None else None

        chunk: list[tuple[Any, ...]] = []
        for row in iter_rows(target):
            chunk.append(row)
            if len(chunk) >= 2000:
                bad = check(chunk)
                if bad is not None:
                    return bad
                chunk = []
        bad = check(chunk) if chunk else None
        if bad is not None:
            return bad
    finally:
        if db is not None:
            db.close()
    report = verifier.finish()
    if not report.ok or journal_db is None:
        return report
    behind = journal_head - report.head
    detail = f"copy agrees with the journal up to seq {report.head}" + (f"; {behind} newer events not yet copied" if behind else "")
    return VerifyReport(True, report.count, report.head, None, None, detail, report.head_hash)


def _compare(db: sqlite3.Connection, chunk: list[tuple[Any, ...]], journal_head: int) -> VerifyReport | None:
    """Each copied row must have the journal's hash; a copied seq the journal lacks is a cut tail."""
    first, last = chunk[0][0], chunk[-1][0]
    have = dict(db.execute("SELECT seq, hash FROM events WHERE seq BETWEEN ? AND ?", (first, last)).fetchall())
    for row in chunk:
        seq, hash_ = row[0], row[6]
        if seq not in have:
            return VerifyReport(False, 0, seq - 1, seq, "truncated",
                                f"the copy holds seq {seq} (hash {hash_}); the journal ends at seq {journal_head}"
                                if seq > journal_head else f"the copy holds seq {seq}; the journal has no such row")
        if have[seq] != hash_:
            return VerifyReport(False, 0, seq - 1, seq, "replica mismatch",
                                f"the copy has hash {hash_} for seq {seq}, the journal {have[seq]}")
    return None


def restore_blocking(target: ReplicaTarget, data_dir: Path) -> int:
    """A new journal in `data_dir` from the copy: events as stored, blobs, checkpoint files and
    the public key; projections rebuilt. Returns the number of events. No private key is made:
    the restored journal verifies and is read; to write to it, put the journal's key back."""
    db_path = data_dir / DB_NAME
    if db_path.exists():
        raise JournalError(f"{db_path} exists: restore into a new, empty data directory")
    meta_raw = target.get("meta.json")
    if meta_raw is None:
        raise ReplicaError(f"{target.name}: no meta.json: not a relay copy")
    meta = json.loads(meta_raw)
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    blobs = BlobStore(data_dir / "blobs")
    for key in target.list("blobs"):
        data = target.get(key)
        if data is not None:
            blobs.put(data)
    cp_dir = data_dir / "checkpoints"
    for key in target.list("checkpoints"):
        data = target.get(key)
        if data is not None:
            cp_dir.mkdir(mode=0o700, exist_ok=True)
            write_durably(cp_dir / key.rsplit("/", 1)[-1], data, mode=0o600)
    if meta.get("public_key"):
        keys = data_dir / "keys"
        keys.mkdir(mode=0o700, exist_ok=True)
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        pub = Ed25519PublicKey.from_public_bytes(bytes.fromhex(meta["public_key"]))
        (keys / f"{signing.KEY_NAME}.pub").write_bytes(pub.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    db = sqlite3.connect(db_path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        schema.create_all(db)
        db.execute("BEGIN IMMEDIATE")
        db.executemany("INSERT INTO meta(key, value) VALUES(?, ?)", list((meta.get("meta") or {}).items()))
        count = 0
        chunk: list[tuple[Any, ...]] = []
        for row in iter_rows(target):
            chunk.append(row)
            if len(chunk) >= 2000:
                db.executemany("INSERT INTO events VALUES(?,?,?,?,?,?,?)", chunk)
                count += len(chunk)
                chunk = []
        db.executemany("INSERT INTO events VALUES(?,?,?,?,?,?,?)", chunk)
        count += len(chunk)
        projections.rebuild(db)
        db.execute("COMMIT")
    finally:
        db.close()
    os.chmod(db_path, 0o600)
    return count


async def restore(target: ReplicaTarget, data_dir: Path) -> int:
    return await asyncio.to_thread(restore_blocking, target, data_dir)


async def verify_copy(target: ReplicaTarget, hmac_key: bytes | None, journal_db: Path | None,
                      journal_public: str | None) -> VerifyReport:
    return await asyncio.to_thread(verify_copy_blocking, target, hmac_key, journal_db, journal_public)


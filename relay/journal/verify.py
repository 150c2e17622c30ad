"""Recompute the chain, the blobs and the signed checkpoints, and name the first seq that breaks.

Rows are streamed in chunks and checked off the event loop; only the set of blob digests
already checked and the checkpoint expectations are kept in memory.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relay.journal.blobs import BlobStore
from relay.journal.chain import GENESIS, canonical_json, event_canonical, event_hash
from relay.journal.signing import signature_ok

PROBLEMS = (
    "hash mismatch",
    "prev_hash mismatch",
    "seq gap",
    "blob missing",
    "blob changed",
    "checkpoint signature invalid",
    "truncated",
)


@dataclass(frozen=True)
class VerifyReport:
    """`head` is the last seq read (the journal's head when ok); `problem` is one of PROBLEMS."""

    ok: bool
    count: int
    head: int
    first_bad_seq: int | None = None
    problem: str | None = None
    detail: str = ""
    head_hash: str = ""

    def line(self) -> str:
        if self.ok:
            return f"ok: {self.count} events, head seq {self.head} hash {self.head_hash}"
        return f"seq {self.first_bad_seq}: {self.problem}" + (f" ({self.detail})" if self.detail else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "count": self.count,
            "head": self.head,
            "head_hash": self.head_hash,
            "first_bad_seq": self.first_bad_seq,
            "problem": self.problem,
            "detail": self.detail,
        }


def blob_refs(body: Any) -> list[str]:
    """Digests an event names: `raw_sha256`, `decrypted_sha256` and each stored attachment's `sha256`."""
    if not isinstance(body, dict):
        return []
    refs: list[str] = []
    for key in ("raw_sha256", "decrypted_sha256"):
        if body.get(key):
            refs.append(str(body[key]))
    for att in body.get("attachments") or ():
        if isinstance(att, dict) and att.get("sha256") and not att.get("refused"):
            refs.append(str(att["sha256"]))
    return refs


def erased_blobs(rows: Iterable[tuple[int, Any]]) -> dict[str, int]:
    """From `(seq, body)` of retention.erased events: digest -> last seq that erased it."""
    erased: dict[str, int] = {}
    for seq, body in rows:
        if isinstance(body, str):
            try:
                body = json.loads(body)
            except ValueError:
                continue
        if isinstance(body, dict):
            for sha in body.get("blobs") or ():
                erased[str(sha)] = max(seq, erased.get(str(sha), 0))
    return erased


def erased_tombstones(rows: Iterable[tuple[int, Any]]) -> dict[int, str]:
    """From `(seq, body)` of retention.erased events: erased seq -> SHA-256 of its tombstone body.

    Erasure replaces an event's body with a tombstone that keeps its digests; the later,
    chained `retention.erased` event records the tombstone's digest, so the verifier accepts
    exactly that body where the original hash can no longer be recomputed.
    """
    out: dict[int, str] = {}
    for _seq, body in rows:
        if isinstance(body, str):
            try:
                body = json.loads(body)
            except ValueError:
                continue
        if isinstance(body, dict):
            for key, digest in (body.get("digests") or {}).items():
                try:
                    out[int(key)] = str(digest)
                except ValueError:
                    continue
    return out


@dataclass(frozen=True)
class CheckpointFile:
    path: Path
    record: dict[str, Any]


class ChainVerifier:
    """Feed rows `(seq, ts, kind, conversation, body or body_json, prev_hash, hash)` in seq order."""

    def __init__(
        self,
        *,
        key: bytes | None,
        blobs: BlobStore | None,
        erased: dict[str, int],
        files: list[CheckpointFile],
        known_keys: set[str] | None = None,
        tombstones: dict[int, str] | None = None,
    ) -> None:
        self.key = key
        self.tombstones = tombstones or {}
        self.blobs = blobs
        self.erased = erased
        self.known_keys = known_keys
        self.files = files
        self.expect: dict[int, tuple[str, CheckpointFile]] = {}
        for f in files:
            self.expect[int(f.record["seq"])] = (str(f.record["hash"]), f)
            self.expect.setdefault(int(f.record["upto_seq"]), (str(f.record["head_hash"]), f))
        self.checked: set[str] = set()
        self.count = 0
        self.prev_seq = 0
        self.prev_hash = GENESIS
        self.report: VerifyReport | None = None

    def _fail(self, seq: int, problem: str, detail: str) -> bool:
        self.report = VerifyReport(False, self.count, self.prev_seq, seq, problem, detail, self.prev_hash)
        return False

    def feed(self, rows: Iterable[tuple[Any, ...]]) -> bool:
        """False once a problem is found (then `report` says which)."""
        for seq, ts, kind, conversation, body, prev_hash, hash_ in rows:
            expected = self.prev_seq + 1
            if seq != expected:
                if seq > expected:
                    return self._fail(expected, "seq gap", f"seq {expected} is missing; next row is seq {seq}")
                return self._fail(expected, "seq gap", f"seq {seq} follows seq {self.prev_seq}")
            if prev_hash != self.prev_hash:
                return self._fail(
                    seq, "prev_hash mismatch", f"prev_hash {prev_hash} but seq {seq - 1} has hash {self.prev_hash}"
                )
            if isinstance(body, str):
                try:
                    body = json.loads(body)
                except ValueError:
                    return self._fail(seq, "hash mismatch", "body is not valid JSON")
            try:
                actual = event_hash(prev_hash, event_canonical(seq, ts, kind, conversation, body), self.key)
            except (TypeError, ValueError) as exc:
                return self._fail(seq, "hash mismatch", f"row cannot be encoded: {exc}")
            if actual != hash_ and not self._tombstone_ok(seq, body):
                return self._fail(seq, "hash mismatch", f"stored {hash_}, recomputed {actual}")
            if kind == "checkpoint" and not self._checkpoint_ok(seq, body):
                return False
            if seq in self.expect and self.expect[seq][0] != hash_:
                want, f = self.expect[seq]
                return self._fail(seq, "truncated", f"{f.path.name} records hash {want} for seq {seq}, journal has {hash_}")
            for sha in blob_refs(body):
                if sha in self.checked or self.erased.get(sha, 0) > seq or self.blobs is None:
                    continue
                problem = self.blobs.check(sha)
                if problem is not None:
                    return self._fail(seq, problem, sha)
                self.checked.add(sha)
            self.count += 1
            self.prev_seq = seq
            self.prev_hash = hash_
        return True

    def _tombstone_ok(self, seq: int, body: Any) -> bool:
        want = self.tombstones.get(seq)
        if want is None or not isinstance(body, dict) or "erased" not in body:
            return False
        return hashlib.sha256(canonical_json(body).encode()).hexdigest() == want

    def _checkpoint_ok(self, seq: int, body: Any) -> bool:
        if not isinstance(body, dict) or not signature_ok(body):
            return self._fail(seq, "checkpoint signature invalid", "signature does not verify")
        if self.known_keys is not None and body.get("public_key") not in self.known_keys:
            return self._fail(seq, "checkpoint signature invalid", "signed by a key other than the journal's")
        if body.get("upto_seq") != seq - 1 or body.get("head_hash") != self.prev_hash:
            return self._fail(seq, "checkpoint signature invalid", "signed head differs from the chain")
        return True

    def finish(self) -> VerifyReport:
        """After the last row: a checkpoint file naming a later seq means the tail was cut."""
        if self.report is not None:
            return self.report
        for f in self.files:
            seq = int(f.record["seq"])
            if seq > self.prev_seq:
                return self._report_truncated(seq, f)
        return VerifyReport(True, self.count, self.prev_seq, None, None, "", self.prev_hash)

    def _report_truncated(self, seq: int, f: CheckpointFile) -> VerifyReport:
        self._fail(
            self.prev_seq + 1,
            "truncated",
            f"{f.path.name} records seq {seq} (hash {f.record.get('hash')}) but the journal ends at seq {self.prev_seq}",
        )
        assert self.report is not None
        return self.report


def load_checkpoint_files(
    records: list[tuple[Path, dict[str, Any]]], known_keys: set[str] | None
) -> tuple[list[CheckpointFile], VerifyReport | None]:
    """Valid files, or a report naming the first file whose signature fails."""
    files: list[CheckpointFile] = []
    for path, record in records:
        good = all(k in record for k in ("seq", "hash", "upto_seq", "head_hash")) and signature_ok(record)
        if good and known_keys is not None and record.get("public_key") not in known_keys:
            good = False
        if not good:
            seq = record.get("seq") if isinstance(record.get("seq"), int) else None
            return [], VerifyReport(False, 0, 0, seq, "checkpoint signature invalid", f"{path} does not verify")
        files.append(CheckpointFile(path, record))
    return files, None

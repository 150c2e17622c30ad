"""Recompute the chain, the blobs and the signed checkpoints, and name the first seq that breaks.

Rows are streamed in chunks and checked off the event loop; only the set of blob digests
already checked and the checkpoint expectations are kept in memory. The stored canonical body
is hashed as it is (no parse and re-encode); a body is parsed only where its content matters:
checkpoints, events naming blobs, and a hash that only an erasure tombstone can explain.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relay.journal.blobs import BlobStore
from relay.journal.chain import GENESIS, canonical_json, canonical_str, event_canonical, event_hash, fast_canonical
from relay.journal.signing import signature_ok

PROBLEMS = (
    "hash mismatch",
    "prev_hash mismatch",
    "seq gap",
    "blob missing",
    "blob changed",
    "checkpoint signature invalid",
    "truncated",
    "witness mismatch",
    "replica mismatch",
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
    from_seq: int = 1
    """First seq checked: 1 for a full verify, the seq after the recorded checkpoint otherwise."""
    last_checkpoint: tuple[int, str] | None = None
    """(seq, hash) of the last signed checkpoint event checked: where the next incremental run starts."""

    @property
    def full(self) -> bool:
        return self.from_seq <= 1

    def line(self) -> str:
        if self.ok:
            scope = "" if self.full else f" (incremental from seq {self.from_seq}; --full for the whole chain)"
            return f"ok: {self.count} events, head seq {self.head} hash {self.head_hash}{scope}" + (
                f"; {self.detail}" if self.detail else "")
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
            "from_seq": self.from_seq,
            "mode": "full" if self.full else "incremental",
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
    witness: str | None = None
    """The witness that holds this record; None for the journal's own checkpoint_dir."""

    @property
    def label(self) -> str:
        return f"witness {self.witness}" if self.witness else self.path.name


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
        start: tuple[int, str] = (0, GENESIS),
    ) -> None:
        """`start`: (seq, hash) of an event already verified; rows begin after it."""
        self.key = key
        self.tombstones = tombstones or {}
        self.blobs = blobs
        self.erased = erased
        self.known_keys = known_keys
        self.files = files
        self.expect: dict[int, list[tuple[str, CheckpointFile]]] = {}
        for f in files:
            self.expect.setdefault(int(f.record["seq"]), []).append((str(f.record["hash"]), f))
            self.expect.setdefault(int(f.record["upto_seq"]), []).append((str(f.record["head_hash"]), f))
        self.agreed: int = start[0]
        """Last seq whose hash a checkpoint record confirmed: a rewrite lies after it."""
        self.checked: set[str] = set()
        self.count = 0
        self.prev_seq, self.prev_hash = start
        self.from_seq = start[0] + 1
        self.last_checkpoint: tuple[int, str] | None = None
        self.report: VerifyReport | None = None
        self._kinds: dict[str, str] = {}

    def _fail(self, seq: int, problem: str, detail: str) -> bool:
        self.report = VerifyReport(False, self.count, self.prev_seq, seq, problem, detail, self.prev_hash,
                                   self.from_seq, self.last_checkpoint)
        return False

    def _hash_stored(self, seq: int, ts: Any, kind: str, conversation: Any, body_json: str, prev_hash: str) -> str | None:
        """The link hash of the row as stored (its body_json is the canonical JSON the writer made);
        None when a column has a type the writer never writes (then the slow path decides)."""
        if type(ts) is not float or type(kind) is not str or not (conversation is None or type(conversation) is str):
            return None
        kind_json = self._kinds.get(kind)
        if kind_json is None:
            kind_json = self._kinds[kind] = canonical_str(kind)
        conv_json = "null" if conversation is None else canonical_str(conversation)
        data = prev_hash.encode("ascii") + fast_canonical(seq, ts, kind_json, conv_json, body_json)
        if self.key is None:
            return hashlib.sha256(data).hexdigest()
        return hmac.digest(self.key, data, "sha256").hex()

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
                body_json = body
                if self._hash_stored(seq, ts, kind, conversation, body_json, prev_hash) == hash_:
                    if kind != "checkpoint" and not _may_name_blobs(body_json):
                        if not self._passed(seq, hash_):
                            return False
                        continue
                    body = _loads(body_json)
                    if body is None:
                        return self._fail(seq, "hash mismatch", "body is not valid JSON")
                else:
                    body = _loads(body_json)
                    if body is None:
                        return self._fail(seq, "hash mismatch", "body is not valid JSON")
                    if not self._slow_hash_ok(seq, ts, kind, conversation, body, prev_hash, hash_):
                        return False
            elif not self._slow_hash_ok(seq, ts, kind, conversation, body, prev_hash, hash_):
                return False
            if kind == "checkpoint":
                if not self._checkpoint_ok(seq, body):
                    return False
                self.last_checkpoint = (seq, hash_)
            if seq in self.expect and not self._expected(seq, hash_):
                return False
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

    def _passed(self, seq: int, hash_: str) -> bool:
        """The common case: the row hashes as stored and names no blob."""
        if seq in self.expect and not self._expected(seq, hash_):
            return False
        self.count += 1
        self.prev_seq = seq
        self.prev_hash = hash_
        return True

    def _expected(self, seq: int, hash_: str) -> bool:
        for want, f in self.expect[seq]:
            if want != hash_:
                if f.witness:
                    return self._fail(seq, "witness mismatch",
                                      f"{f.label} records hash {want} for seq {seq}, journal has {hash_}:"
                                      f" rewritten after seq {self.agreed}")
                return self._fail(seq, "truncated", f"{f.label} records hash {want} for seq {seq}, journal has {hash_}")
        self.agreed = seq
        return True

    def _slow_hash_ok(self, seq: int, ts: Any, kind: Any, conversation: Any, body: Any, prev_hash: str, hash_: str) -> bool:
        """Re-encode the parsed row (a stored body that is not canonical, or an erasure tombstone)."""
        try:
            actual = event_hash(prev_hash, event_canonical(seq, ts, kind, conversation, body), self.key)
        except (TypeError, ValueError) as exc:
            return self._fail(seq, "hash mismatch", f"row cannot be encoded: {exc}")
        if actual != hash_ and not self._tombstone_ok(seq, body):
            return self._fail(seq, "hash mismatch", f"stored {hash_}, recomputed {actual}")
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
        for f in sorted(self.files, key=lambda f: int(f.record["seq"])):
            seq = int(f.record["seq"])
            if seq > self.prev_seq:
                return self._report_truncated(seq, f)
        return VerifyReport(True, self.count, self.prev_seq, None, None, "", self.prev_hash,
                            self.from_seq, self.last_checkpoint)

    def _report_truncated(self, seq: int, f: CheckpointFile) -> VerifyReport:
        self._fail(
            self.prev_seq + 1,
            "truncated",
            f"{f.label} records seq {seq} (hash {f.record.get('hash')}) but the journal ends at seq {self.prev_seq}",
        )
        assert self.report is not None
        return self.report


def _may_name_blobs(body_json: str) -> bool:
    """Cheap test on the canonical text: only a body with a `raw_sha256` or an attachment
    `sha256` string can name a blob (`"raw_sha256":null` and `"attachments":[]` cannot)."""
    return '_sha256":"' in body_json or '"sha256":"' in body_json


def _loads(body_json: str) -> Any:
    try:
        return json.loads(body_json)
    except ValueError:
        return None


def load_checkpoint_files(
    records: list[tuple[Path, dict[str, Any]]], known_keys: set[str] | None, witness: str | None = None
) -> tuple[list[CheckpointFile], VerifyReport | None]:
    """Valid files, or a report naming the first file whose signature fails."""
    files: list[CheckpointFile] = []
    for path, record in records:
        good = all(k in record for k in ("seq", "hash", "upto_seq", "head_hash")) and signature_ok(record)
        if good and known_keys is not None and record.get("public_key") not in known_keys:
            good = False
        if not good:
            seq = record.get("seq") if isinstance(record.get("seq"), int) else None
            where = f"witness {witness}: the record of seq {seq}" if witness else str(path)
            return [], VerifyReport(False, 0, 0, seq, "checkpoint signature invalid", f"{where} does not verify")
        files.append(CheckpointFile(path, record, witness))
    return files, None

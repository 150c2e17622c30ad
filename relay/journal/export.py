"""Export for a regulator: events.jsonl, the blobs they name, and a manifest of SHA-256 digests.

Anyone can check an export offline: every file's digest is in manifest.json, the events carry
the chain, and the latest checkpoint carries the Ed25519 signature over the head.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from relay.journal.blobs import BlobStore, file_sha256, is_sha256
from relay.journal.chain import canonical_json
from relay.journal.journal import Journal
from relay.journal.opening import JournalError
from relay.private_files import DIR_MODE, open_private, private_dir, write_private
from relay.journal.signing import KEY_NAME, load_public
from relay.journal.verify import ChainVerifier, VerifyReport, blob_refs, erased_blobs, erased_tombstones, load_checkpoint_files

FORMAT = "relay-journal-export/1"


def _check_out_dir(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise JournalError(f"{out} is not an empty directory; export needs a new or empty one")
    private_dir(out)
    os.chmod(out, DIR_MODE)


async def export(journal: Journal, out: Path) -> dict[str, Any]:
    """Writes the export into `out` (must be empty or new); returns the manifest."""
    _check_out_dir(out)
    erased = erased_blobs(
        (r[0], r[1]) for r in await journal.fetchall("SELECT seq, body_json FROM events WHERE kind='retention.erased'")
    )
    events_path = out / "events.jsonl"
    digest = hashlib.sha256()
    wanted: set[str] = set()
    count, head_seq, head_hash = 0, 0, ""
    checkpoint: dict[str, Any] | None = None
    with os.fdopen(open_private(events_path, os.O_WRONLY | os.O_TRUNC), "wb") as f:
        async for ev in journal.iter_events():
            line = (canonical_json(ev.to_dict()) + "\n").encode()
            f.write(line)
            digest.update(line)
            count, head_seq, head_hash = count + 1, ev.seq, ev.hash
            if ev.kind == "checkpoint":
                checkpoint = dict(ev.body, seq=ev.seq, hash=ev.hash)
            wanted.update(sha for sha in blob_refs(ev.body) if erased.get(sha, 0) <= ev.seq)
    files: dict[str, str] = {"events.jsonl": digest.hexdigest()}
    missing: list[str] = []
    for sha in sorted(wanted):
        if not is_sha256(sha):
            missing.append(sha)
            continue
        src = journal.blobs.path(sha)
        rel = f"blobs/{sha[:2]}/{sha}"
        if not src.exists():
            missing.append(sha)
            continue
        dst = out / rel
        private_dir(dst.parent)
        write_private(dst, src.read_bytes())
        files[rel] = file_sha256(dst)
    pub = journal.keys_dir / f"{KEY_NAME}.pub"
    if pub.exists():
        write_private(out / f"{KEY_NAME}.pub", pub.read_bytes())
        files[f"{KEY_NAME}.pub"] = file_sha256(out / f"{KEY_NAME}.pub")
    rows = await journal.fetchall("SELECT value FROM meta WHERE key='hash'")
    manifest = {
        "format": FORMAT,
        "created": time.time(),
        "count": count,
        "head": {"seq": head_seq, "hash": head_hash},
        "hash_algorithm": rows[0][0] if rows else "sha256",
        "checkpoint": checkpoint,
        "missing_blobs": missing,
        "files": files,
    }
    write_private(out / "manifest.json", json.dumps(manifest, indent=1, sort_keys=True).encode("utf-8"))
    return manifest


def _export_rows(path: Path) -> Any:
    with open(path, "rb") as f:
        for line in f:
            ev = json.loads(line)
            yield (ev["seq"], ev["ts"], ev["kind"], ev["conversation"], ev["body"], ev["prev_hash"], ev["hash"])


def verify_export(out: Path, hmac_key: bytes | None = None) -> VerifyReport:
    """Offline check of an export: chain, blobs, the signed checkpoint, the manifest digests."""
    try:
        manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
        events_path = out / "events.jsonl"
        known = load_public(out)
        erased_rows = [(r[0], r[4]) for r in _export_rows(events_path) if r[2] == "retention.erased"]
        erased = erased_blobs(erased_rows)
        tombstones = erased_tombstones(erased_rows)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise JournalError(f"{out}: not a readable journal export: {exc}") from None
    if manifest.get("hash_algorithm") == "hmac-sha256" and hmac_key is None:
        raise JournalError(f"{out}: the export is chained with HMAC: set journal.hmac_key")
    checkpoint = manifest.get("checkpoint")
    records = [(out / "manifest.json", checkpoint)] if isinstance(checkpoint, dict) else []
    files, bad = load_checkpoint_files(records, {known} if known else None)
    if bad is not None:
        return bad
    verifier = ChainVerifier(
        key=hmac_key, blobs=BlobStore(out / "blobs"), erased=erased, files=files, known_keys={known} if known else None,
        tombstones=tombstones,
    )
    try:
        verifier.feed(_export_rows(events_path))
    except (ValueError, KeyError, TypeError) as exc:
        return VerifyReport(False, verifier.count, verifier.prev_seq, verifier.prev_seq + 1, "hash mismatch", f"unreadable line: {exc}")
    report = verifier.finish()
    if not report.ok:
        return report
    head = manifest.get("head") or {}
    if head.get("seq") != report.head or head.get("hash") != report.head_hash:
        return VerifyReport(
            False, report.count, report.head, report.head + 1, "truncated",
            f"manifest head is seq {head.get('seq')} hash {head.get('hash')}", report.head_hash,
        )
    for rel, sha in sorted((manifest.get("files") or {}).items()):
        path = out / rel
        actual = file_sha256(path) if path.is_file() else None
        if actual != sha:
            problem = ("blob missing" if actual is None else "blob changed") if rel.startswith("blobs/") else "hash mismatch"
            return VerifyReport(False, report.count, report.head, None, problem, f"{rel} differs from manifest.json", report.head_hash)
    return report

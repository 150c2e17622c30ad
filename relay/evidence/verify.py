"""`relay journal verify-export`: check an export offline with only the journal's public key.

Checks the manifest signature, every file's digest (changed, added, removed), each exported
event's chain hash (when the journal is not HMAC-keyed), the blobs the events name, and the
signed checkpoint that covers the exported events.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from relay.evidence.keys import KeyError_, public_key_from_text
from relay.evidence.manifest import canonical, check_manifest


def event_hash(ev: dict[str, Any]) -> str:
    """The journal's link hash: sha256(prev_hash || canonical {seq, ts, kind, conversation, body})."""
    data = {k: ev.get(k) for k in ("seq", "ts", "kind", "conversation", "body")}
    return hashlib.sha256(str(ev.get("prev_hash", "")).encode("ascii") + canonical(data)).hexdigest()


def checkpoint_signature_ok(body: dict[str, Any]) -> bool:
    try:
        key = public_key_from_text(str(body["public_key"]))
        key.verify(bytes.fromhex(str(body["signature"])), f"{int(body['upto_seq'])}:{body['head_hash']}".encode())
    except (InvalidSignature, KeyError, KeyError_, ValueError, TypeError):
        return False
    return True


VERIFIED = "verified"
INTEGRITY_ONLY = "integrity only, NOT authenticated"
FAILED = "FAILED"


@dataclass
class ExportReport:
    """`ok` only when nothing is wrong *and* the signature was checked against a key the
    caller trusts: a manifest's own key proves nothing, since a forger signs with a fresh one."""

    ok: bool
    directory: str
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    files: int = 0
    events: int = 0
    key_pinned: bool = False
    checkpoint_seq: int | None = None
    authenticated: bool = False
    status: str = FAILED

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _erasure_attestations(events: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    for ev in events:
        if ev.get("kind") == "retention.erased":
            digests = (ev.get("body") or {}).get("digests") or {}
            for s in (ev.get("body") or {}).get("seqs") or []:
                out[int(s)] = {"by": ev.get("seq"), "digest": digests.get(str(s))}
    return out


def _check_events(root: Path, manifest: dict[str, Any], report: ExportReport) -> None:
    path = root / "events.jsonl"
    if not path.exists():
        return
    events: list[dict[str, Any]] = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError as exc:
            report.problems.append(f"events.jsonl:{n}: not JSON: {exc.msg}")
            return
    report.events = len(events)
    hmac_keyed = bool((manifest.get("journal") or {}).get("hmac"))
    if hmac_keyed:
        report.notes.append("the journal is HMAC-keyed: event hashes need the key; linkage and signatures checked")
    erased = _erasure_attestations(events)
    prev: dict[str, Any] | None = None
    blobs_dir = root / "blobs"
    for ev in events:
        seq = int(ev.get("seq", 0))
        if prev is not None and int(prev.get("seq", 0)) + 1 == seq and ev.get("prev_hash") != prev.get("hash"):
            report.problems.append(f"events.jsonl seq {seq}: prev_hash does not match seq {seq - 1}'s hash")
        if not hmac_keyed and event_hash(ev) != ev.get("hash"):
            att = erased.get(seq)
            if att is None:
                report.problems.append(f"events.jsonl seq {seq}: hash mismatch (the event was altered)")
            elif att.get("digest") and hashlib.sha256(canonical(ev.get("body"))).hexdigest() != att["digest"]:
                report.problems.append(f"events.jsonl seq {seq}: erased body differs from what retention.erased seq {att['by']} recorded")
        body = ev.get("body") or {}
        if blobs_dir.is_dir() and seq not in erased:
            refs = [body.get("raw_sha256"), body.get("decrypted_sha256")] + [
                a.get("sha256") for a in body.get("attachments") or [] if not a.get("refused")]
            for sha in filter(None, refs):
                f = blobs_dir / str(sha)[:2] / str(sha)
                if f.exists() and hashlib.sha256(f.read_bytes()).hexdigest() != sha:
                    report.problems.append(f"blobs/{str(sha)[:2]}/{sha}: blob changed (content does not match its digest)")
        prev = ev
    cp = manifest.get("checkpoint")
    if cp is None:
        if events:
            report.notes.append("no journal checkpoint covered these events when exported")
        return
    body = {k: cp.get(k) for k in ("upto_seq", "head_hash", "public_key", "signature")}
    report.checkpoint_seq = cp.get("seq")
    if not checkpoint_signature_ok(body):
        report.problems.append(f"checkpoint seq {cp.get('seq')}: signature does not verify")
    elif body.get("public_key") != manifest.get("public_key"):
        report.problems.append(f"checkpoint seq {cp.get('seq')}: signed by another key than the manifest")
    as_event = {"seq": cp.get("seq"), "ts": cp.get("ts"), "kind": "checkpoint", "conversation": None, "body": body,
                "prev_hash": cp.get("prev_hash")}
    if not hmac_keyed and event_hash(as_event) != cp.get("hash"):
        report.problems.append(f"checkpoint seq {cp.get('seq')}: hash mismatch")
    by_seq = {int(e.get("seq", 0)): e for e in events}
    if by_seq.get(int(body.get("upto_seq") or 0), {}).get("hash", body.get("head_hash")) != body.get("head_hash"):
        report.problems.append(f"checkpoint seq {cp.get('seq')}: signed head differs from exported seq {body.get('upto_seq')}")
    top = max((int(e.get("seq", 0)) for e in events if e.get("kind") != "checkpoint"), default=0)
    if int(body.get("upto_seq") or -1) < top:
        report.notes.append(f"the newest checkpoint covers seq ≤ {body.get('upto_seq')}; the export holds seq {top}"
                            " (its manifest signature still covers every file)")


def verify_export(root: Path, public_key: Ed25519PublicKey | None = None) -> ExportReport:
    """Everything wrong with the export at `root` (ok when nothing is)."""
    report = ExportReport(ok=False, directory=str(root))
    if not root.is_dir():
        report.problems.append(f"{root}: not a directory")
        return report
    check = check_manifest(root, public_key)
    report.problems.extend(check.problems)
    report.files = check.files_checked
    report.key_pinned = check.key_pinned
    if not check.key_pinned:
        report.notes.append("no --public-key given: the signature was checked only against the key the manifest "
                            "names itself, which anyone can replace with a fresh one; pass the journal's "
                            "keys/journal_ed25519.pub, obtained from a trusted source, to authenticate")
    if check.manifest is not None:
        _check_events(root, check.manifest, report)
    report.authenticated = check.key_pinned and not report.problems
    report.ok = report.authenticated
    report.status = VERIFIED if report.ok else FAILED if report.problems else INTEGRITY_ONLY
    return report

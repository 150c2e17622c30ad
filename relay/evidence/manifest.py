"""The signed manifest that makes an export verifiable offline.

Every file of an export is listed with its SHA-256; the manifest is signed with the journal's
Ed25519 key and names the journal checkpoint that covers the exported events, so a regulator
holding only the public key can detect any changed, added or removed file.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from relay.evidence.keys import public_hex, public_key_from_text, KeyError_
from relay.private_files import write_private

MANIFEST = "manifest.json"
FORMAT = "relay-export/v1"


def canonical(obj: Any) -> bytes:
    """The journal's canonical JSON: sorted keys, no spaces, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def list_files(root: Path) -> list[str]:
    """Every regular file under `root` as a POSIX relative path, sorted (symlinks count too)."""
    out: list[str] = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            rel = Path(dirpath, name).relative_to(root).as_posix()
            out.append(rel)
    return sorted(out)


def write_manifest(root: Path, key: Ed25519PrivateKey, meta: dict[str, Any],
                   digests: Mapping[str, str] | None = None) -> dict[str, Any]:
    """List every file under `root` with its SHA-256, sign, and write `manifest.json`; returns the
    manifest. `digests` are those computed while the files were written (`Outputs`); a file
    missing from them is read and hashed here, so the list always matches the directory."""
    known = digests or {}
    files = {rel: known.get(rel) or sha256_file(root / rel) for rel in list_files(root) if rel != MANIFEST}
    manifest = {**meta, "format": FORMAT, "public_key": public_hex(key), "files": files}
    manifest["signature"] = key.sign(canonical(manifest)).hex()
    write_private(root / MANIFEST, (json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8"))
    return manifest


@dataclass
class ManifestCheck:
    """Outcome of checking a manifest's signature and the files it lists."""

    manifest: dict[str, Any] | None
    problems: list[str] = field(default_factory=list)
    key_pinned: bool = False
    files_checked: int = 0


def check_manifest(root: Path, public_key: Ed25519PublicKey | None) -> ManifestCheck:
    path = root / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return ManifestCheck(None, [f"{MANIFEST}: missing; this is not a relay export"])
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return ManifestCheck(None, [f"{MANIFEST}: unreadable: {exc}"])
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        return ManifestCheck(None, [f"{MANIFEST}: not a {FORMAT} manifest"])
    check = ManifestCheck(manifest, key_pinned=public_key is not None)
    body = {k: v for k, v in manifest.items() if k != "signature"}
    try:
        signature = bytes.fromhex(str(manifest.get("signature", "")))
        stated = public_key_from_text(str(manifest.get("public_key", "")))
    except (ValueError, KeyError_) as exc:
        check.problems.append(f"{MANIFEST}: malformed signature or public key: {exc}")
        return check
    if public_key is not None and public_hex(public_key) != public_hex(stated):
        check.problems.append(f"{MANIFEST}: signed with key {public_hex(stated)[:16]}…, not the given public key {public_hex(public_key)[:16]}…")
    try:
        (public_key or stated).verify(signature, canonical(body))
    except InvalidSignature:
        check.problems.append(f"{MANIFEST}: signature does not verify (the manifest was changed or signed with another key)")
    files = manifest.get("files")
    if not isinstance(files, dict):
        check.problems.append(f"{MANIFEST}: no file list")
        return check
    present = set(list_files(root)) - {MANIFEST}
    for rel in sorted(files):
        target = root / rel
        if rel not in present:
            check.problems.append(f"{rel}: removed (listed in the manifest, missing from the export)")
            continue
        check.files_checked += 1
        if sha256_file(target) != files[rel]:
            check.problems.append(f"{rel}: changed (SHA-256 differs from the manifest)")
    for rel in sorted(present - set(files)):
        check.problems.append(f"{rel}: added (not listed in the manifest)")
    return check

"""`relay journal verify-export` never says "verified" without a key the auditor trusts: an
export forged and re-signed under a fresh key is integrity-consistent but not authentic."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from relay.evidence import verify_export
from relay.evidence.keys import load_public_key, public_hex
from relay.evidence.manifest import MANIFEST, write_manifest
from relay.evidence.verify import event_hash
from relay.journal import Journal
from tests.compliance_support import compliance_config, sample_history, write_config

ROOT = Path(__file__).resolve().parents[1]


def relay(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "relay.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)


def forge(export: Path) -> None:
    """What a forger does: change the evidence, re-sign every checkpoint and re-link the chain
    with a fresh key, then sign a new manifest with it."""
    key = Ed25519PrivateKey.generate()
    page = next((export / "transcripts").glob("*.html"))
    page.write_text(page.read_text(encoding="utf-8").replace("</body>", "<p>I never promised returns.</p></body>"),
                    encoding="utf-8")
    events = [json.loads(line) for line in (export / "events.jsonl").read_text(encoding="utf-8").splitlines()]
    prev: dict[str, Any] | None = None
    hashes: dict[int, str] = {}
    for ev in events:
        if prev is not None and prev["seq"] + 1 == ev["seq"]:
            ev["prev_hash"] = prev["hash"]
        if ev["kind"] == "checkpoint":
            resign(ev["body"], key, hashes)
        ev["hash"] = hashes[ev["seq"]] = event_hash(ev)
        prev = ev
    (export / "events.jsonl").write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in events), encoding="utf-8")
    old: dict[str, Any] = json.loads((export / MANIFEST).read_text(encoding="utf-8"))
    meta = {k: v for k, v in old.items() if k not in ("format", "public_key", "files", "signature")}
    cp = meta.get("checkpoint")
    if cp is not None:
        body = {k: cp[k] for k in ("upto_seq", "head_hash", "public_key", "signature")}
        resign(body, key, hashes)
        cp.update(body)
        cp["hash"] = event_hash({"seq": cp["seq"], "ts": cp["ts"], "kind": "checkpoint", "conversation": None,
                                 "body": body, "prev_hash": cp["prev_hash"]})
    (export / MANIFEST).unlink()
    write_manifest(export, key, meta)


def resign(body: dict[str, Any], key: Ed25519PrivateKey, hashes: dict[int, str]) -> None:
    body["head_hash"] = hashes.get(int(body["upto_seq"]), body["head_hash"])
    body["public_key"] = public_hex(key)
    body["signature"] = key.sign(f"{int(body['upto_seq'])}:{body['head_hash']}".encode()).hex()


async def test_a_forged_export_is_not_verified_without_a_trusted_key(tmp_path: Path) -> None:
    j = await Journal.open(tmp_path / "data")
    await sample_history(j)
    await j.close()
    cfg = write_config(tmp_path / "config.yaml", compliance_config(tmp_path / "data"))
    out = tmp_path / "exp"
    assert relay("journal", "export", "--config", str(cfg), "--out", str(out)).returncode == 0
    pub = str(tmp_path / "data" / "keys" / "journal_ed25519.pub")

    genuine = relay("journal", "verify-export", str(out))
    assert genuine.returncode == 3 and genuine.stdout.startswith("NOT AUTHENTICATED (integrity only)"), genuine.stdout
    assert "ok:" not in genuine.stdout and "--public-key" in genuine.stdout
    assert relay("journal", "verify-export", str(out), "--public-key", pub).returncode == 0

    forge(out)
    r = relay("journal", "verify-export", str(out))
    assert r.returncode == 3 and "NOT AUTHENTICATED" in r.stdout and not r.stdout.startswith("ok"), r.stdout
    r = relay("journal", "verify-export", str(out), "--json")
    report = json.loads(r.stdout)
    assert r.returncode == 3
    assert (report["ok"], report["authenticated"], report["status"]) == (False, False, "integrity only, NOT authenticated")
    r = relay("journal", "verify-export", str(out), "--public-key", pub)
    assert r.returncode == 1 and "not the given public key" in r.stdout

    api = verify_export(out)
    assert not api.ok and not api.authenticated and api.status == "integrity only, NOT authenticated"
    pinned = verify_export(out, load_public_key(pub))
    assert not pinned.ok and pinned.status == "FAILED"

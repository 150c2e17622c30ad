"""Retention, holds and erasure requests from the shell (offline admin path), then `relay journal verify`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from relay.journal import Journal
from tests.compliance_support import History, compliance_config, party, write_config, write_policies

ROOT = Path(__file__).resolve().parents[1]


def relay(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "relay.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)


async def test_hold_retention_and_verify_from_the_cli(tmp_path: Path) -> None:
    j = await Journal.open(tmp_path / "data")
    h = History(j)
    ann, bea = party("webchat", "ann", "Ann"), party("webchat", "bea", "Bea")
    await h.message("a", "c-ann", "inbound", "ann old message", client=ann)
    await h.message("b", "c-bea", "inbound", "bea old message", client=bea)
    await j.close()
    cfg = str(write_config(tmp_path / "config.yaml", compliance_config(tmp_path / "data", write_policies(tmp_path / "p"))))
    r = relay("hold", "add", "--conversation", "c-bea", "--reason", "FINRA inquiry 42", "--as", "carol", "--config", cfg)
    assert r.returncode == 2 and "carol has role reviewer" in r.stderr
    r = relay("hold", "add", "--conversation", "c-bea", "--reason", "FINRA inquiry 42", "--as", "dave", "--config", cfg, "--json")
    assert r.returncode == 0, r.stderr
    hold = json.loads(r.stdout)
    r = relay("hold", "list", "--config", cfg, "--json")
    assert [x["id"] for x in json.loads(r.stdout)["holds"]] == [hold["hold_id"]]
    r = relay("retention", "run", "--config", cfg, "--now", "2100-01-01", "--as", "ops")
    assert r.returncode == 0 and r.stdout.startswith("erased 1 messages"), r.stdout + r.stderr
    assert f"kept 1 messages under legal hold {hold['hold_id']}" in r.stdout
    r = relay("journal", "verify", "--config", cfg)
    assert r.returncode == 0 and r.stdout.startswith("ok:"), r.stdout + r.stderr
    r = relay("journal", "search", "old message", "--config", cfg, "--json")
    assert [json.loads(x)["id"] for x in r.stdout.splitlines()] == [h.ids["b"]]
    r = relay("erase", "--client", "webchat:bea", "--reason", "DSAR-7", "--as", "erin", "--config", cfg)
    assert r.returncode == 0 and "restricted" in r.stdout
    r = relay("journal", "search", "old message", "--config", cfg, "--json")
    assert r.stdout == ""
    r = relay("hold", "release", hold["hold_id"], "--reason", "closed", "--as", "dave", "--config", cfg)
    assert r.returncode == 0
    r = relay("retention", "run", "--config", cfg, "--now", "2100-01-01", "--json")
    assert json.loads(r.stdout)["erased"]["message_ids"] == [h.ids["b"]]
    r = relay("journal", "verify", "--config", cfg, "--json")
    assert json.loads(r.stdout)["ok"] is True
    r = relay("hold", "release", "h-nope", "--reason", "x", "--as", "dave", "--config", cfg)
    assert r.returncode == 2 and r.stderr.strip() == "relay: no active legal hold 'h-nope' (see: relay hold list)"

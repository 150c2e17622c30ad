"""Exporting from a running relay: the export is journaled and a fresh checkpoint covers it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from relay.app import RelayApp
from relay.journal import Journal
from tests.compliance_support import memory_compliance_config, until, write_config, write_policies

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "relay.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)


async def test_journal_checkpoint_signs_the_current_head(tmp_path: Path) -> None:
    j = await Journal.open(tmp_path / "d", checkpoint_every=1000, checkpoint_seconds=3600)
    try:
        ev = await j.append("admin.action", {"actor": "t", "action": "x", "args": {}})
        await j.checkpoint()
        rows = await j.fetchall("SELECT body_json FROM events WHERE kind = 'checkpoint'")
        assert len(rows) == 1 and json.loads(rows[0]["body_json"])["upto_seq"] >= ev.seq
        await j.checkpoint()
        assert len(await j.fetchall("SELECT 1 FROM events WHERE kind = 'checkpoint'")) == 1
    finally:
        await j.close()


async def test_export_from_a_running_relay_is_covered_and_journaled(tmp_path: Path) -> None:
    cfg = memory_compliance_config(tmp_path / "data", write_policies(tmp_path / "policies"),
                                   journal={"checkpoint_seconds": 3600})
    config = str(write_config(tmp_path / "config.yaml", cfg))
    app = await RelayApp.start(cfg)
    try:
        clients, staff = app.channels["clients"], app.channels["staff"]
        r = await clients.inject("u1", "hello", "u1:1")
        await until(lambda: len(staff.sent) >= 1)
        await staff.inject("ann" if staff.sent[0].to.user == "ann" else "ben", "hi, how can I help", "s:1", chat=r.conversation)
        await until(lambda: any("how can I help" in o.text for o in clients.sent))
        head = app.journal.head[0]
        done = await asyncio.to_thread(cli, "journal", "export", "--config", config, "--out", str(tmp_path / "x"),
                                       "--conversation", r.conversation, "--as", "carol", "--json")
        assert done.returncode == 0, done.stderr
        assert "note:" not in done.stderr
        manifest = json.loads((tmp_path / "x" / "manifest.json").read_text())
        assert manifest["checkpoint"]["upto_seq"] >= head and manifest["actor"] == "carol"
        rows = await app.journal.fetchall("SELECT body_json FROM events WHERE kind = 'admin.action'")
        exports = [json.loads(x["body_json"]) for x in rows if json.loads(x["body_json"])["action"] == "journal.export"]
        assert exports and exports[-1]["actor"] == "carol" and exports[-1]["args"]["conversation"] == r.conversation
        ok = await asyncio.to_thread(cli, "journal", "verify-export", str(tmp_path / "x"), "--public-key",
                                     str(tmp_path / "data" / "keys" / "journal_ed25519.pub"))
        assert ok.returncode == 0, ok.stdout
    finally:
        await app.stop()

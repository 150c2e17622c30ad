"""The evidence commands as a user runs them: `relay journal export|verify-export|search`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from relay.journal import Journal
from tests.compliance_support import compliance_config, sample_history, write_config

ROOT = Path(__file__).resolve().parents[1]


def relay(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "relay.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)


@pytest.fixture
async def recorded(tmp_path: Path):
    j = await Journal.open(tmp_path / "data")
    h = await sample_history(j)
    await j.close()
    cfg = write_config(tmp_path / "config.yaml", compliance_config(tmp_path / "data"))
    return h, cfg, tmp_path


async def test_export_then_verify_export_then_tamper(recorded) -> None:
    h, cfg, tmp = recorded
    out = tmp / "exp"
    r = relay("journal", "export", "--config", str(cfg), "--out", str(out), "--client", "webchat:ann", "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["counts"]["messages"] == 5 and summary["formats"] == ["jsonl", "eml", "html"]
    assert "relay: export: " not in r.stderr  # a short export shows no progress at the default interval
    r = relay("journal", "export", "--config", str(cfg), "--out", str(tmp / "exp2"), "--progress", "2")
    assert r.returncode == 0, r.stderr
    assert "relay: export: read 35 events of at most 35\n" in r.stderr and "relay: export: wrote 7 of 7 messages\n" in r.stderr
    pub = str(tmp / "data" / "keys" / "journal_ed25519.pub")
    r = relay("journal", "verify-export", str(out), "--public-key", pub)
    assert r.returncode == 0 and r.stdout.startswith("ok:"), r.stdout + r.stderr
    page = next((out / "transcripts").glob("*.html"))
    data = bytearray(page.read_bytes())
    data[200] ^= 0x20
    page.write_bytes(bytes(data))
    r = relay("journal", "verify-export", str(out), "--public-key", pub, "--json")
    assert r.returncode == 1
    report = json.loads(r.stdout)
    assert report["ok"] is False and report["problems"] == [f"transcripts/{page.name}: changed (SHA-256 differs from the manifest)"]
    r = relay("journal", "verify", "--config", str(cfg), "--export", str(out))
    assert r.returncode == 1 and "FAIL" in r.stdout


async def test_search_finds_chinese_and_japanese_with_filters(recorded) -> None:
    h, cfg, tmp = recorded
    for term in ("株価", "我想买股票", "はいくら"):
        r = relay("journal", "search", term, "--config", str(cfg), "--json")
        assert r.returncode == 0, r.stderr
        hits = [json.loads(x) for x in r.stdout.splitlines()]
        assert [x["id"] for x in hits] == [h.ids["b1"]], term
    r = relay("journal", "search", "--config", str(cfg), "--action", "quarantine", "--direction", "outbound", "--json")
    assert [json.loads(x)["id"] for x in r.stdout.splitlines()] == [h.ids["b2"]]
    r = relay("journal", "search", "guaranteed", "--config", str(cfg), "--rule", "MNPI-001", "--client", "webchat:ann", "--json")
    assert sorted(json.loads(x)["id"] for x in r.stdout.splitlines()) == sorted([h.ids["a3"], h.ids["a4"]])
    r = relay("journal", "search", "guaranteed", "--config", str(cfg), "--employee", "bob", "--json")
    assert r.stdout == ""


async def test_bad_input_gets_one_clear_line(recorded) -> None:
    h, cfg, tmp = recorded
    r = relay("journal", "export", "--config", str(cfg), "--out", str(tmp / "x"), "--since", "yesterday-ish")
    assert r.returncode == 2 and r.stderr.strip() == "relay: 'yesterday-ish' is not a date (use YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS][+00:00])"
    r = relay("journal", "export", "--config", str(cfg), "--out", str(tmp / "y"), "--include-restricted", "--as", "carol")
    assert r.returncode == 2 and "only an admin may see restricted content" in r.stderr
    r = relay("journal", "export", "--config", str(cfg), "--out", str(tmp / "z"), "--format", "pdf")
    assert r.returncode == 2 and "unknown export format 'pdf'" in r.stderr
    r = relay("journal", "verify-export", str(tmp / "nope"))
    assert r.returncode == 1 and "not a directory" in r.stdout
    r = relay("journal", "search", "--config", str(cfg))
    assert r.returncode == 2 and "give some text to look for, or a filter" in r.stderr

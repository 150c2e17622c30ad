"""What a newcomer types: `relay --version`, `journal show` (newest by default), a search with no
hits, and human output without Python reprs (`review show`'s sender, `backtest`'s skipped)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any

from tests.journal_support import REPO, jopen, received, rows  # noqa: F401  (jopen is a fixture)
from tests.test_compliance_restricted_views import flagged_history, write_policies

CWD = Path(tempfile.mkdtemp(prefix="relay-cli-cwd-"))


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "relay.cli", *args], cwd=CWD,
                          env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True, timeout=60)


def test_version() -> None:
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    out = cli("--version")
    assert out.returncode == 0 and out.stdout == f"relay {version}\n"


def seqs(out: subprocess.CompletedProcess[str]) -> list[int]:
    return [int(line.split()[0]) for line in out.stdout.splitlines()]


async def test_journal_show_gives_the_newest_events_unless_told_oldest(tmp_path: Path, jopen: Any) -> None:
    data = tmp_path / "data"
    j = await jopen(data, checkpoint_every=100_000)
    for i in range(120):
        await j.append("message.received", received(f"m{i}", f"message {i}"), f"c-{i % 2}")
    await j.close()
    last = rows(data / "journal.sqlite3", "SELECT MAX(seq) FROM events")[0][0]  # 120 messages and a checkpoint
    assert last >= 120
    out = cli("journal", "show", "--data-dir", str(data))
    assert out.returncode == 0, out.stderr
    assert seqs(out) == list(range(last - 99, last + 1))
    assert "showing the newest 100 events" in out.stderr and "--oldest" in out.stderr
    assert seqs(cli("journal", "show", "--data-dir", str(data), "--limit", "3")) == [last - 2, last - 1, last]
    assert seqs(cli("journal", "show", "--data-dir", str(data), "--limit", "3", "--oldest")) == [1, 2, 3]
    assert seqs(cli("journal", "show", "--data-dir", str(data), "--limit", "2", "--conversation", "c-0")) == [117, 119]
    everything = cli("journal", "show", "--data-dir", str(data), "--oldest")
    assert seqs(everything) == list(range(1, last + 1)) and everything.stderr == ""
    few = cli("journal", "show", "--data-dir", str(data), "--since-seq", "115")
    assert seqs(few) == list(range(115, last + 1)) and few.stderr == ""


async def test_search_without_hits_says_so(tmp_path: Path, jopen: Any) -> None:
    data = tmp_path / "data"
    j = await jopen(data)
    await j.append("message.received", received("m1", "Please send the statement"), "c-1")
    await j.close()
    out = cli("journal", "search", "nowhere to be found", "--data-dir", str(data))
    assert out.returncode == 0 and out.stdout == ""
    assert out.stderr == 'relay: no messages match "nowhere to be found"\n'
    hit = cli("journal", "search", "statement", "--data-dir", str(data))
    assert hit.stdout.startswith("m1  ") and hit.stderr == ""


async def test_review_show_and_backtest_print_no_python_reprs(tmp_path: Path) -> None:
    cfg, h = await flagged_history(tmp_path)
    shown = cli("review", "show", h.ids["b1"], "--config", str(cfg))
    assert shown.returncode == 0, shown.stderr
    sender = next(line for line in shown.stdout.splitlines() if line.startswith("from "))
    assert "Bea (bea on webchat)" in sender and "{" not in sender and "'" not in sender
    text = next(line for line in shown.stdout.splitlines() if line.startswith("text "))
    assert text.split(None, 1)[1] == '"bea wants a guaranteed bond"'
    proposed = write_policies(tmp_path / "proposed", """\
schema: relay-policy/v1
policy: {id: stricter, version: 2}
rules:
  - id: F-001
    title: Promissory language (now held)
    match: {keywords: [guaranteed]}
    action: quarantine
""")
    report = cli("policy", "backtest", str(proposed), "--config", str(cfg))
    assert report.returncode == 0, report.stderr
    first = report.stdout.splitlines()[0]
    assert "(skipped: 1 restricted: data-subject erasure request)" in first, first
    assert "{" not in report.stdout and "['" not in report.stdout and "'" not in report.stdout, report.stdout
    assert "flag [F-001] -> quarantine [F-001]" in report.stdout

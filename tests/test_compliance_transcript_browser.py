"""The HTML transcript opens in a real browser (headless Chromium) and shows what a regulator needs."""

from __future__ import annotations

import subprocess
from pathlib import Path

from relay.evidence import ExportFilter, write_export
from relay.evidence.keys import load_private_key
from relay.journal import Journal
from tests.compliance_support import sample_history

CHROMIUM = "/usr/bin/chromium"


def dump_dom(page: Path, profile: Path) -> str:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--no-first-run", "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
           "--allow-file-access-from-files", "--dump-dom", page.as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


async def test_transcript_renders_in_headless_chromium(tmp_path: Path) -> None:
    j = await Journal.open(tmp_path / "data")
    h = await sample_history(j)
    await j.close()
    j = await Journal.open(tmp_path / "data", read_only=True)
    try:
        await write_export(j, tmp_path / "out", ExportFilter(), load_private_key(tmp_path / "data" / "keys" / "journal_ed25519"),
                           formats=("html",))
    finally:
        await j.close()
    dom = dump_dom(tmp_path / "out" / "transcripts" / "c-ann.html", tmp_path / "profile")
    assert "<title>Conversation c-ann</title>" in dom
    assert dom.count("data-message-id=") == 5
    assert f"id=\"m{h.seqs['a1']}\" class=\"inbound deleted\"" in dom
    assert "edit of message #" in dom and "Is there a guaranteed return?" in dom
    assert "v-flag" in dom and "MNPI-001" in dom
    assert '<mark title="MNPI-001">guaranteed return</mark>' in dom
    assert "conversation assigned to bob" in dom
    assert 'class="attachment"' in dom and "chart.png" in dom
    dom_ben = dump_dom(tmp_path / "out" / "transcripts" / "c-ben.html", tmp_path / "profile2")
    assert "我想买股票，株価はいくらですか" in dom_ben and "v-quarantine" in dom_ben

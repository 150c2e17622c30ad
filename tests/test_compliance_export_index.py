"""The export's index (CSV and JSON, one row per exported message, signed with the rest) and the
export as one zip that `verify --export X.zip` checks."""

from __future__ import annotations

import asyncio
import csv
import datetime
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from relay.evidence import ExportFilter, verify_export, write_export
from relay.evidence.keys import load_private_key, load_public_key
from relay.evidence.packing import ZipError, pack_zip, unpack_zip
from relay.journal import Journal
from tests.compliance_support import sample_history

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
async def recorded(tmp_path: Path):
    j = await Journal.open(tmp_path / "data")
    h = await sample_history(j)
    await j.close()
    j = await Journal.open(tmp_path / "data", read_only=True)
    yield j, h, tmp_path
    await j.close()


async def test_index_lists_every_exported_message_with_its_file(recorded) -> None:
    j, h, tmp = recorded
    out = tmp / "export"
    res = await write_export(j, out, ExportFilter(), load_private_key(tmp / "data" / "keys" / "journal_ed25519"),
                             index=True)
    assert {"index.csv", "index.json"} <= set(res.manifest["files"])
    rows = list(csv.DictReader(io.StringIO((out / "index.csv").read_text(encoding="utf-8"))))
    doc = json.loads((out / "index.json").read_text(encoding="utf-8"))
    assert len(rows) == len(doc) == res.manifest["counts"]["messages"] == 7
    assert {r["message_id"] for r in rows} == set(h.ids.values())
    for r in rows:
        assert (out / r["file"]).is_file() and r["file"].startswith("eml/")
    b2 = next(r for r in doc if r["message_id"] == h.ids["b2"])
    assert (b2["verdict"], b2["rules"], b2["direction"], b2["conversation"]) == ("quarantine", "MNPI-002", "outbound", "c-ben")
    assert b2["sender"] == "webdesk:bob (Bob)" and b2["recipient"] == "webchat:ben (Ben 客户)" and b2["channel"] == "webdesk"
    assert b2["time"].endswith("Z") and b2["seq"] == h.seqs["b2"]
    assert verify_export(out, load_public_key(str(tmp / "data" / "keys" / "journal_ed25519.pub"))).ok


async def test_index_without_eml_points_at_the_transcript_and_guards_formulas(recorded) -> None:
    j, h, tmp = recorded
    out = tmp / "export"
    await write_export(j, out, ExportFilter(conversation="c-ann"),
                       load_private_key(tmp / "data" / "keys" / "journal_ed25519"), formats=("jsonl", "html"), index=True)
    rows = list(csv.DictReader(io.StringIO((out / "index.csv").read_text(encoding="utf-8"))))
    assert rows and all(r["file"] == "transcripts/c-ann.html" for r in rows)
    from relay.evidence.index import _cell
    assert _cell("=HYPERLINK(\"x\")") == "'=HYPERLINK(\"x\")" and _cell("Ann") == "Ann"


def test_unpack_refuses_members_outside_the_export(tmp_path: Path) -> None:
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("export/manifest.json", "{}")
        z.writestr("../escape.txt", "x")
    with pytest.raises(ZipError, match="outside the export"):
        unpack_zip(bad, tmp_path / "into")
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "a.txt").write_text("a")
    packed = pack_zip(tmp_path / "e")
    assert unpack_zip(packed, tmp_path / "into2") == tmp_path / "into2" / "e"
    with pytest.raises(ZipError, match="exists"):
        pack_zip(tmp_path / "e")


async def test_cli_date_range_export_with_index_as_one_zip_verifies(recorded) -> None:
    j, h, tmp = recorded
    today = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    env = dict(os.environ, PYTHONPATH=str(ROOT))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "relay.cli", "journal", *args], capture_output=True, text=True,
                              env=env, timeout=120)

    out = tmp / "records-today"
    done = await asyncio.to_thread(cli, "export", "--data-dir", str(tmp / "data"), "--since", today, "--until", today,
                                   "--index", "--zip", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert f"packed as {out}.zip" in done.stdout
    with zipfile.ZipFile(f"{out}.zip") as z:
        assert "records-today/index.csv" in z.namelist() and "records-today/manifest.json" in z.namelist()
    ok = await asyncio.to_thread(cli, "verify", "--data-dir", str(tmp / "data"), "--export", f"{out}.zip")
    assert ok.returncode == 0 and ok.stdout.startswith("ok:"), ok.stdout + ok.stderr
    # a file changed inside the zip fails the manifest
    tampered = tmp / "tampered.zip"
    with zipfile.ZipFile(f"{out}.zip") as src, zipfile.ZipFile(tampered, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            dst.writestr(info, data.replace(b"Hello", b"Jello") if info.filename.endswith("index.csv") or
                         info.filename.endswith(".eml") else data)
    bad = await asyncio.to_thread(cli, "verify", "--data-dir", str(tmp / "data"), "--export", str(tampered))
    assert bad.returncode == 1 and "FAIL" in bad.stdout

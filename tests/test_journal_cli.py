"""`relay journal …` run as a user would: a subprocess against a journal on disk."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.journal_support import REPO, jopen, received, rows, tamper  # noqa: F401  (jopen is a fixture)


def relay(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = dict(os.environ, PYTHONPATH=str(REPO), **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "relay.cli", "journal", *args],
        cwd=REPO, env=full_env, capture_output=True, text=True, timeout=60,
    )


async def make(tmp_path: Path, jopen: Any, **kw: Any) -> Path:
    data = tmp_path / "data"
    j = await jopen(data, **kw)
    raw = await j.put_blob(b'{"update_id": 1}')
    att = await j.put_blob(b"\x89PNG fake image")
    attachment = {"name": "a.png", "mime": "image/png", "size": 15, "sha256": att, "platform_ref": "f", "refused": ""}
    await j.append("message.received", received("m1", "我想查询一下我的账户余额", raw_sha256=raw), "c-1")
    await j.append("message.received", received("m2", "Please send the statement", attachments=[attachment]), "c-2")
    await j.append("policy.verdict", {"message_id": "m2", "action": "flag", "review": True, "rules": []}, "c-2")
    await j.close()
    return data


async def test_verify_ok_and_broken(tmp_path: Path, jopen: Any) -> None:
    data = await make(tmp_path, jopen)
    out = relay("verify", "--data-dir", str(data))
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok: 4 events, head seq 4 hash ")
    report = json.loads(relay("verify", "--data-dir", str(data), "--json").stdout)
    assert report["ok"] is True and report["count"] == 4
    tamper(data / "journal.sqlite3", "UPDATE events SET body_json=replace(body_json, 'statement', 'invoice') WHERE seq=2")
    out = relay("verify", "--data-dir", str(data))
    assert out.returncode == 1
    assert out.stdout.startswith("seq 2: hash mismatch")
    report = json.loads(relay("verify", "--data-dir", str(data), "--json").stdout)
    assert (report["ok"], report["first_bad_seq"], report["problem"]) == (False, 2, "hash mismatch")


async def test_config_file_with_env_hmac_key(tmp_path: Path, jopen: Any) -> None:
    data = await make(tmp_path, jopen, hmac_key=b"from-env")
    cfg = tmp_path / "relay.yaml"
    cfg.write_text(f"data_dir: {data}\njournal:\n  hmac_key: ${{JOURNAL_KEY}}\n")
    out = relay("verify", "--config", str(cfg), env={"JOURNAL_KEY": "from-env"})
    assert out.returncode == 0 and out.stdout.startswith("ok: 4 events"), out.stderr
    out = relay("verify", "--config", str(cfg), env={"JOURNAL_KEY": "wrong"})
    assert out.returncode == 2 and "not the key" in out.stderr and "Traceback" not in out.stderr
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_KEY"}
    out = subprocess.run([sys.executable, "-m", "relay.cli", "journal", "verify", "--config", str(cfg)],
                         cwd=REPO, env=dict(env, PYTHONPATH=str(REPO)), capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "JOURNAL_KEY is not set" in out.stderr


async def test_missing_journal_is_a_clear_error(tmp_path: Path) -> None:
    for verb in (["verify"], ["show"], ["search", "hello"], ["export", "--out", str(tmp_path / "x")]):
        out = relay(*verb, "--data-dir", str(tmp_path / "nothing"))
        assert out.returncode == 2, verb
        assert out.stderr.startswith("relay: no journal at ") and "Traceback" not in out.stderr
    assert not (tmp_path / "nothing").exists()
    out = relay("verify", "--config", str(tmp_path / "nope.yaml"))
    assert out.returncode == 2 and "nope.yaml" in out.stderr


async def test_show_filters_and_json(tmp_path: Path, jopen: Any) -> None:
    data = await make(tmp_path, jopen)
    out = relay("show", "--data-dir", str(data))
    lines = out.stdout.splitlines()
    assert out.returncode == 0 and len(lines) == 4
    assert "message.received" in lines[0] and "c-1" in lines[0] and "checkpoint" in lines[3]
    out = relay("show", "--data-dir", str(data), "--conversation", "c-2", "--json")
    evs = [json.loads(line) for line in out.stdout.splitlines()]
    assert [(e["seq"], e["kind"]) for e in evs] == [(2, "message.received"), (3, "policy.verdict")]
    assert evs[0]["body"]["text"] == "Please send the statement" and len(evs[0]["hash"]) == 64
    out = relay("show", "--data-dir", str(data), "--kind", "message.received", "--since-seq", "2", "--json")
    assert [json.loads(line)["seq"] for line in out.stdout.splitlines()] == [2]
    out = relay("show", "--data-dir", str(data), "--limit", "1")
    assert len(out.stdout.splitlines()) == 1


async def test_search_cjk_and_short_queries(tmp_path: Path, jopen: Any) -> None:
    data = await make(tmp_path, jopen)
    out = relay("search", "账户余额", "--data-dir", str(data))
    assert out.returncode == 0
    fields = out.stdout.strip().split("  ")
    assert fields[:4] == ["m1", "c-1", "webchat", "client-1"] and "账户余额" in fields[4]
    out = relay("search", "余额", "--data-dir", str(data))  # two characters: below trigram, falls back to LIKE
    assert out.stdout.startswith("m1  ")
    out = relay("search", "STATEMENT", "--data-dir", str(data), "--json")
    hit = json.loads(out.stdout)
    assert hit["id"] == "m2" and "[statement]" in hit["snip"]
    assert relay("search", "nowhere to be found", "--data-dir", str(data)).stdout == ""


async def test_export_then_verify_offline(tmp_path: Path, jopen: Any) -> None:
    data = await make(tmp_path, jopen)
    out_dir = tmp_path / "export"
    out = relay("export", "--out", str(out_dir), "--data-dir", str(data))
    assert out.returncode == 0, out.stderr
    manifest = json.loads((out_dir / "manifest.json").read_text())
    assert manifest["head"]["seq"] == 4 and manifest["checkpoint"]["upto_seq"] == 3
    names = set(manifest["files"])
    assert "events.jsonl" in names and len([n for n in names if n.startswith("blobs/")]) == 2
    lines = (out_dir / "events.jsonl").read_text().splitlines()
    assert [json.loads(line)["seq"] for line in lines] == [1, 2, 3, 4]
    assert relay("verify", "--export", str(out_dir)).stdout.startswith("ok: 4 events")
    blob = next(n for n in names if n.startswith("blobs/"))
    (out_dir / blob).write_bytes(b"changed")
    out = relay("verify", "--export", str(out_dir))
    assert out.returncode == 1 and "blob changed" in out.stdout
    again = relay("export", "--out", str(out_dir), "--data-dir", str(data))
    assert again.returncode == 2 and "not an empty directory" in again.stderr


async def test_rebuild_restores_dropped_projection_rows(tmp_path: Path, jopen: Any) -> None:
    data = await make(tmp_path, jopen)
    db = data / "journal.sqlite3"
    before = rows(db, "SELECT * FROM messages ORDER BY id")
    tamper(db, "DELETE FROM messages", "DELETE FROM review_queue")
    out = relay("rebuild", "--data-dir", str(data))
    assert out.returncode == 0 and "rebuilt projections from 4 events" in out.stdout
    assert rows(db, "SELECT * FROM messages ORDER BY id") == before
    assert rows(db, "SELECT message_id, state FROM review_queue") == [("m2", "open")]
    assert relay("verify", "--data-dir", str(data)).returncode == 0
    await asyncio.sleep(0)

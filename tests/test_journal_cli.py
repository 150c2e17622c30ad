"""`relay journal …` run as a user would: a subprocess against a journal on disk."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from tests.compliance_support import PNG, History, compliance_config, party, write_config, write_policies
from tests.journal_support import REPO, jopen, received, rows, tamper  # noqa: F401  (jopen is a fixture)


CWD = Path(tempfile.mkdtemp(prefix="relay-cli-cwd-"))
"""Where the commands run: not the checkout, whose ./data (left by `make run`) a command without
--config/--data-dir would read; here such a command fails instead of passing by luck."""


def relay(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = dict(os.environ, PYTHONPATH=str(REPO), **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "relay.cli", "journal", *args],
        cwd=CWD, env=full_env, capture_output=True, text=True, timeout=60,
    )


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Any `relay` command (erase, retention …), for the journal states the tests need."""
    return subprocess.run([sys.executable, "-m", "relay.cli", *args], cwd=CWD, env=dict(os.environ, PYTHONPATH=str(REPO)),
                          capture_output=True, text=True, timeout=60)


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
    report = json.loads(relay("verify", "--data-dir", str(data), "--json", "--full").stdout)
    assert report["ok"] is True and report["count"] == 4 and report["mode"] == "full"
    tamper(data / "journal.sqlite3", "UPDATE events SET body_json=replace(body_json, 'statement', 'invoice') WHERE seq=2")
    out = relay("verify", "--data-dir", str(data), "--full")
    assert out.returncode == 1
    assert out.stdout.startswith("seq 2: hash mismatch")
    report = json.loads(relay("verify", "--data-dir", str(data), "--json", "--full").stdout)
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
                         cwd=CWD, env=dict(env, PYTHONPATH=str(REPO)), capture_output=True, text=True, timeout=60)
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
    assert relay("verify", "--export", str(out_dir), "--data-dir", str(data)).stdout.startswith("ok: 4 events")
    blob = next(n for n in names if n.startswith("blobs/"))
    (out_dir / blob).write_bytes(b"changed")
    out = relay("verify", "--export", str(out_dir), "--data-dir", str(data))
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


async def test_a_file_that_is_not_a_journal_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "journal.sqlite3").write_bytes(b"this is not sqlite at all" * 100)
    out = relay("verify", "--data-dir", str(tmp_path))
    assert out.returncode == 2 and out.stderr.startswith("relay: cannot read the journal database")
    assert "Traceback" not in out.stderr


SECRET = "4711-SECRET"
RESTRICTED = "[restricted: data-subject erasure request]"


async def with_erasure_request(tmp_path: Path, jopen: Any) -> tuple[Path, History]:
    """Ann (messages, a file, an inline raw payload, a handover notice about her) asks for
    erasure with `relay erase`; then she writes again. Bea asks for nothing."""
    data = tmp_path / "data"
    ann, bea = party("webchat", "ann", "Ann Private"), party("webchat", "bea", "Bea")
    h = History(await jopen(data))
    await h.message("a1", "c-ann", "inbound", f"my account number is {SECRET}", client=ann,
                    attachments=[("passport-scan.png", "image/png", PNG)])
    await h.message("a2", "c-ann", "outbound", f"noted, {SECRET} it is", client=ann)
    raw = json.dumps({"text": f"inline {SECRET}"}).encode()
    inline = received("m-inline", f"inline {SECRET}", channel="webchat") | {
        "client": ann, "sender": ann, "raw_inline": base64.b64encode(raw).decode(), "raw_digest": "d" * 64}
    await h.journal.append("message.received", inline, "c-ann")
    await h.journal.append("delivery.queued", {
        "delivery_id": "d-handover", "message_id": "a-handover", "channel": "webdesk", "to": party("webdesk", "bob", "Bob"),
        "out": {"kind": "notice", "text": f"Handover: ann wrote {SECRET}", "attachments": [], "origin": party("relay", "relay"),
                "client": ann, "action": "allow", "rules": []}}, "c-ann")
    await h.message("b1", "c-bea", "inbound", "bea asks about bonds", client=bea)
    await h.journal.close()
    cfg = write_config(tmp_path / "config.yaml", compliance_config(data, write_policies(tmp_path / "policies")))
    r = cli("erase", "--client", "webchat:ann", "--reason", "DSAR-9", "--as", "erin", "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    h.journal = await jopen(data)
    await h.message("a3", "c-ann", "inbound", "ann wrote again after the request", client=ann)
    await h.journal.close()
    return cfg, h


async def test_show_withholds_content_under_an_erasure_request(tmp_path: Path, jopen: Any) -> None:
    cfg, h = await with_erasure_request(tmp_path, jopen)
    db = tmp_path / "data" / "journal.sqlite3"
    stored = rows(db, "SELECT seq, kind, conversation, prev_hash, hash FROM events ORDER BY seq")
    out = relay("show", "--config", str(cfg))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == len(stored)
    request = rows(db, "SELECT seq FROM events WHERE kind = 'erasure.requested'")[0][0]
    before = "\n".join(lines[:request])
    for hidden in (SECRET, "passport-scan", "Ann Private", base64.b64encode(f'{{"text": "inline {SECRET}'.encode()).decode()[:20]):
        assert hidden not in out.stdout if hidden != "Ann Private" else hidden not in before, hidden
    a1 = lines[h.seqs["a1"] - 1].split()
    assert (a1[0], a1[2], a1[3]) == (str(h.seqs["a1"]), "message.received", "c-ann") and RESTRICTED in lines[h.seqs["a1"] - 1]
    assert RESTRICTED not in lines[h.seqs["b1"] - 1] and RESTRICTED not in lines[h.seqs["a3"] - 1]
    assert "withheld the content of" in out.stderr and "--include-restricted" in out.stderr

    evs = [json.loads(line) for line in relay("show", "--config", str(cfg), "--json").stdout.splitlines()]
    assert [(e["seq"], e["kind"], e["conversation"], e["prev_hash"], e["hash"]) for e in evs] == [tuple(r) for r in stored]
    assert SECRET not in json.dumps(evs, ensure_ascii=False)
    body = evs[h.seqs["a1"] - 1]["body"]
    assert "text" not in body and body["restricted"] == "restricted: data-subject erasure request"
    assert body["raw_sha256"] and body["attachments"][0]["sha256"] and "name" not in body["attachments"][0]
    inline = next(e["body"] for e in evs if e["body"].get("id") == "m-inline")
    assert "raw_inline" not in inline and inline["raw_digest"] == "d" * 64
    assert evs[h.seqs["b1"] - 1]["body"]["text"] == "bea asks about bonds"  # other clients, and Ann after her request
    assert evs[h.seqs["a3"] - 1]["body"]["text"] == "ann wrote again after the request"

    deliveries = relay("show", "--config", str(cfg), "--kind", "delivery.queued", "--json")  # messages not read first
    texts = [json.loads(line)["body"]["out"].get("text") for line in deliveries.stdout.splitlines()]
    assert texts == [None, None, None, "bea asks about bonds", "ann wrote again after the request"]

    refused = relay("show", "--config", str(cfg), "--include-restricted", "--as", "carol")
    assert refused.returncode == 2 and "only an admin may see restricted content" in refused.stderr
    admin = relay("show", "--config", str(cfg), "--include-restricted", "--as", "erin")
    assert admin.returncode == 0 and "passport-scan" in admin.stdout and RESTRICTED not in admin.stdout
    admin = relay("show", "--config", str(cfg), "--include-restricted", "--as", "erin", "--json")
    assert json.loads(admin.stdout.splitlines()[h.seqs["a1"] - 1])["body"]["text"] == f"my account number is {SECRET}"


async def test_show_keeps_tombstones_of_erased_events(tmp_path: Path, jopen: Any) -> None:
    cfg, h = await with_erasure_request(tmp_path, jopen)
    r = cli("retention", "run", "--config", str(cfg), "--now", "2100-01-01", "--as", "ops")
    assert r.returncode == 0 and r.stdout.startswith("erased "), r.stdout + r.stderr
    db = tmp_path / "data" / "journal.sqlite3"
    stored = {seq: json.loads(b) for seq, b in rows(db, "SELECT seq, body_json FROM events")}
    evs = {e["seq"]: e for e in map(json.loads, relay("show", "--config", str(cfg), "--json").stdout.splitlines())}
    bea = evs[h.seqs["b1"]]["body"]
    assert bea == stored[h.seqs["b1"]] and bea["erased"]["reason"] == "retention period ended"
    ann = evs[h.seqs["a1"]]["body"]
    assert ann["erased"]["reason"] == "retention period ended" and ann["restricted"]
    text = relay("show", "--config", str(cfg)).stdout.splitlines()
    assert RESTRICTED in text[h.seqs["a1"] - 1] and RESTRICTED not in text[h.seqs["b1"] - 1]
    assert "bea asks about bonds" not in "\n".join(text)
    assert relay("verify", "--config", str(cfg)).stdout.startswith("ok:")

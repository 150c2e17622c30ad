"""Views beyond search, export and `journal show` withhold a client under an erasure request:
the handover history a new employee receives, `relay review list|show`, the display name in
`conversation.assigned` (`relay journal show`) and the examples of `relay policy backtest`.
Each runs the real CLI (and, for handover, a running relay) against a journal on disk."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from relay.app import RelayApp
from relay.journal import Journal
from tests.compliance_support import (PNG, History, compliance_config, hit, memory_compliance_config, party, until,
                                      write_config, write_policies)

ROOT = Path(__file__).resolve().parents[1]
SECRET = "4711-SECRET"
NOTE = "restricted: data-subject erasure request"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "relay.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)


async def test_handover_history_withholds_the_restricted_clients_earlier_messages(tmp_path: Path) -> None:
    """Una writes (a secret, a file), her employee answers, she asks for erasure, writes again;
    the colleague who takes over sees one withheld line and her new message, never the old ones."""
    cfg = memory_compliance_config(tmp_path / "data", write_policies(tmp_path / "policies"))
    config = write_config(tmp_path / "config.yaml", cfg)
    app = await RelayApp.start(cfg)
    try:
        clients, staff = app.channels["clients"], app.channels["staff"]
        r = await clients.inject("u1", f"my account number is {SECRET}", "u1:1", display="Una Private")
        await until(lambda: any(o.kind == "message" and SECRET in o.text for o in staff.sent))
        owner = (await app.router.get(r.conversation)).employee
        other = "ben" if owner == "ann" else "ann"
        await staff.inject(owner, f"noted {SECRET}, Una Private", f"{owner}:1", chat=r.conversation)
        await until(lambda: any(f"noted {SECRET}" in o.text for o in clients.sent))
        erase = await asyncio.to_thread(cli, "erase", "--client", "clients:u1", "--reason", "DSAR-1", "--as", "erin",
                                        "--config", str(config))
        assert erase.returncode == 0, erase.stderr
        await clients.inject("u1", "a question after my request", "u1:2")
        await until(lambda: any(o.text.endswith("a question after my request") for o in staff.sent))
        done = await asyncio.to_thread(cli, "handover", owner, "--to", other, "--as", "dave", "--config", str(config))
        assert done.returncode == 0, done.stderr
        await until(lambda: any(o.to.user == other and "Handover" in o.text for o in staff.sent))
        history = next(o.text for o in staff.sent if o.to.user == other and "Handover" in o.text)
    finally:
        await app.stop()
    assert SECRET not in history and "Una Private" not in history, history
    assert f"[{NOTE}] 2 earlier message(s) withheld" in history
    assert "clients:u1" in history and "a question after my request" in history


async def test_handover_history_on_the_web_desk_of_relay_run_withholds_too(tmp_path: Path) -> None:
    """`relay run` as a user starts it, the web chat and desk over real WebSockets, `relay erase` and
    `relay handover` from a shell: bob's desk receives a history without the old content."""
    from tests.e2e_support import client_socket, desk_socket, free_port, start_relay, stop_relay, web_config

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cfg = web_config(tmp_path / "data", members=("alice", "bob"), port=port,
                     reviewers={"dave": {"role": "supervisor"}, "erin": {"role": "admin"}})
    config = write_config(tmp_path / "config.yaml", cfg)
    proc = await start_relay(config, base, tmp_path / "relay.log")
    try:
        alice = await desk_socket(base, "alice")
        bob = await desk_socket(base, "bob")
        client = await client_socket(base, "v-erase", "Hana Private")
        await client.say("c1", f"my passport number is {SECRET}")
        first = await alice.wait_for(lambda f: f.get("type") == "message" and SECRET in f.get("text", ""))
        conv = first["conversation"]
        assert (await alice.reply(conv, "r1", "Thanks, Hana Private."))["type"] == "ack"
        await client.wait_for(lambda f: f.get("type") == "message" and "Thanks" in f.get("text", ""))
        erase = await asyncio.to_thread(cli, "erase", "--client", "webchat:v-erase", "--reason", "DSAR-2", "--as", "erin",
                                        "--config", str(config))
        assert erase.returncode == 0, erase.stderr
        done = await asyncio.to_thread(cli, "handover", "alice", "--to", "bob", "--as", "dave", "--config", str(config))
        assert done.returncode == 0, done.stderr
        history = await bob.wait_for(lambda f: f.get("type") == "notice" and f.get("conversation") == conv)
        for s in (client, alice, bob):
            await s.close()
    finally:
        stop_relay(proc)
    assert SECRET not in history["text"] and "Hana Private" not in history["text"], history["text"]
    assert f"[{NOTE}] 2 earlier message(s) withheld" in history["text"]


async def flagged_history(tmp_path: Path) -> tuple[Path, History]:
    """Ann's flagged message (with a file) and Bea's; Ann asks for erasure, then writes a flagged one again."""
    data = tmp_path / "data"
    ann, bea = party("webchat", "ann", "Ann Private"), party("webchat", "bea", "Bea")
    h = History(await Journal.open(data))
    await h.assign("c-ann", "alice", None, ann)
    await h.message("a1", "c-ann", "inbound", f"guaranteed return on {SECRET}", client=ann, action="flag",
                    rules=[hit("F-001", "flag", [[0, 10]], "Promissory language")],
                    attachments=[("passport-scan.png", "image/png", PNG)])
    await h.message("b1", "c-bea", "inbound", "bea wants a guaranteed bond", client=bea, action="flag",
                    rules=[hit("F-001", "flag", [[16, 26]], "Promissory language")])
    await h.journal.close()
    cfg = write_config(tmp_path / "config.yaml", compliance_config(data, write_policies(tmp_path / "policies")))
    r = cli("erase", "--client", "webchat:ann", "--reason", "DSAR-9", "--as", "erin", "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    h.journal = await Journal.open(data)
    await h.message("a2", "c-ann", "inbound", "guaranteed, ann asks again", client=ann, action="flag",
                    rules=[hit("F-001", "flag", [[0, 10]], "Promissory language")])
    await h.journal.close()
    return cfg, h


async def test_review_list_and_show_keep_the_item_but_withhold_its_content(tmp_path: Path) -> None:
    cfg, h = await flagged_history(tmp_path)
    listed = cli("review", "list", "--config", str(cfg), "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {r["message_id"]: r for r in json.loads(listed.stdout)}
    assert set(rows) == {h.ids["a1"], h.ids["b1"], h.ids["a2"]}  # the item is still there to decide
    a1 = rows[h.ids["a1"]]
    assert SECRET not in listed.stdout
    assert "Ann Private" not in json.dumps(a1) and "passport-scan" not in json.dumps(a1)  # she wrote a2 after her request
    assert a1["restricted"] == NOTE and a1["text"] == "" and a1["rules"][0]["matched"] == []
    assert a1["rules"][0]["rule"] == "F-001" and a1["state"] == "open" and a1["sender"]["user"] == "ann"
    assert rows[h.ids["b1"]]["text"] == "bea wants a guaranteed bond" and "restricted" not in rows[h.ids["b1"]]
    assert rows[h.ids["a2"]]["text"] == "guaranteed, ann asks again"
    assert "withheld the content of 1 review items" in listed.stderr

    text = cli("review", "list", "--config", str(cfg))
    line = next(x for x in text.stdout.splitlines() if x.startswith(h.ids["a1"]))
    assert f"[{NOTE}]" in line and SECRET not in text.stdout and "bea wants a guaranteed bond" in text.stdout

    shown = cli("review", "show", h.ids["a1"], "--config", str(cfg))
    assert shown.returncode == 0, shown.stderr
    assert SECRET not in shown.stdout and "Ann Private" not in shown.stdout and f"text      [{NOTE}]" in shown.stdout
    assert "F-001" in shown.stdout
    as_json = json.loads(cli("review", "show", h.ids["a1"], "--config", str(cfg), "--json").stdout)
    assert as_json["restricted"] == NOTE and SECRET not in json.dumps(as_json)

    refused = cli("review", "show", h.ids["a1"], "--config", str(cfg), "--include-restricted", "--as", "carol")
    assert refused.returncode == 2 and "only an admin may see restricted content" in refused.stderr
    admin = cli("review", "show", h.ids["a1"], "--config", str(cfg), "--include-restricted", "--as", "erin", "--json")
    assert admin.returncode == 0, admin.stderr
    full = json.loads(admin.stdout)
    assert full["text"] == f"guaranteed return on {SECRET}" and full["rules"][0]["matched"] == ["guaranteed"]
    assert "restricted" not in full
    admin_list = cli("review", "list", "--config", str(cfg), "--include-restricted", "--as", "erin")
    assert SECRET in admin_list.stdout and NOTE not in admin_list.stdout


async def test_journal_show_withholds_the_display_name_in_assignments(tmp_path: Path) -> None:
    cfg, h = await flagged_history(tmp_path)
    out = cli("journal", "show", "--config", str(cfg), "--kind", "conversation.assigned", "--json")
    assert out.returncode == 0, out.stderr
    bodies = [json.loads(x)["body"] for x in out.stdout.splitlines()]
    assert len(bodies) == 1 and bodies[0]["client"] == {"channel": "webchat", "user": "ann"}
    assert bodies[0]["restricted"] == NOTE and bodies[0]["employee"] == "alice"
    lines = cli("journal", "show", "--config", str(cfg)).stdout.splitlines()
    assert "Ann Private" not in "\n".join(lines[:h.seqs["a2"] - 1])  # before her request; a2 came after it
    admin = cli("journal", "show", "--config", str(cfg), "--kind", "conversation.assigned", "--include-restricted",
                "--as", "erin", "--json")
    assert json.loads(admin.stdout.splitlines()[0])["body"]["client"]["display"] == "Ann Private"


async def test_backtest_skips_restricted_messages_and_never_quotes_them(tmp_path: Path) -> None:
    cfg, h = await flagged_history(tmp_path)
    proposed = write_policies(tmp_path / "proposed", """\
schema: relay-policy/v1
policy: {id: stricter, version: 2}
rules:
  - id: F-001
    title: Promissory language (now held)
    match: {keywords: [guaranteed]}
    action: quarantine
""")
    out = cli("policy", "backtest", str(proposed), "--config", str(cfg), "--json")
    assert out.returncode == 0, out.stderr
    rep: dict[str, Any] = json.loads(out.stdout)
    assert SECRET not in out.stdout
    assert rep["compared"] == 2 and rep["skipped"] == {NOTE: 1}
    examples = [e["message_id"] for e in rep["rules"]["F-001"]["examples"]]
    assert h.ids["a1"] not in examples and {h.ids["b1"], h.ids["a2"]} <= set(examples)


async def test_export_leaves_out_assignments_naming_a_restricted_client(tmp_path: Path) -> None:
    """Ann wrote again after her request, so her conversation is exported; the assignment from
    before the request (with her display name) is not, and the export still verifies."""
    cfg, h = await flagged_history(tmp_path)
    out = tmp_path / "export"
    r = cli("journal", "export", "--out", str(out), "--client", "webchat:ann", "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    kinds = [json.loads(x)["kind"] for x in (out / "events.jsonl").read_text().splitlines()]
    assert "conversation.assigned" not in kinds and "message.received" in kinds
    before = [x for x in (out / "events.jsonl").read_text().splitlines() if json.loads(x)["seq"] < h.seqs["a2"]]
    assert "Ann Private" not in "\n".join(before)
    pub = str(tmp_path / "data" / "keys" / "journal_ed25519.pub")
    assert cli("journal", "verify-export", str(out), "--public-key", pub, "--config", str(cfg)).returncode == 0
    admin = tmp_path / "admin-export"
    r = cli("journal", "export", "--out", str(admin), "--client", "webchat:ann", "--include-restricted", "--as", "erin",
            "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    assert "conversation.assigned" in [json.loads(x)["kind"] for x in (admin / "events.jsonl").read_text().splitlines()]

"""Policy backtest: replay a recorded history through a proposed policy set."""

from __future__ import annotations

import os
import json
import subprocess
import sys
from pathlib import Path

from relay.compliance.backtest import backtest, shadow_report
from relay.evidence.collect import parse_time
from relay.journal import Journal
from relay.policy import EvalInput, load_policy_dir
from tests.compliance_support import History, compliance_config, party, write_config, write_policies

ROOT = Path(__file__).resolve().parents[1]

V1 = """\
schema: relay-policy/v1
policy: {id: conduct, version: 1}
rules:
  - id: F-001
    title: Promissory language
    match: {keywords: [guaranteed]}
    action: flag
  - id: Q-001
    title: Inside information
    match: {keywords: [insider]}
    action: quarantine
  - id: W-001
    title: Welcome words
    scope: {direction: [outbound], first_in_conversation: true}
    match: {keywords: [welcome]}
    action: flag
"""

V2 = """\
schema: relay-policy/v1
policy: {id: conduct, version: 2}
rules:
  - id: F-001
    title: Promissory language (now held)
    match: {keywords: [guaranteed]}
    action: quarantine
  - id: P-001
    title: Personal phone
    match: {keywords: [whatsapp]}
    action: flag
  - id: W-001
    title: Welcome words
    scope: {direction: [outbound], first_in_conversation: true}
    match: {keywords: [welcome]}
    action: flag
"""

TEXTS = [
    ("inbound", "hello there"),
    ("outbound", "welcome to the bank"),           # first outbound: W-001 in both
    ("inbound", "is this guaranteed?"),            # F-001 flag -> quarantine
    ("outbound", "welcome again"),                 # not first: no W-001 in either
    ("inbound", "an insider told me"),             # Q-001 removed in v2
    ("inbound", "text me on whatsapp"),            # P-001 new in v2
    ("inbound", "guaranteed, says my whatsapp"),   # F-001 changes, P-001 added
]


async def record(j: Journal, ps, texts=TEXTS) -> History:
    """Journal each message with the verdict the set `ps` gives it, as the hub does."""
    h = History(j)
    client = party("webchat", "zoe", "Zoe")
    first = True
    for i, (direction, text) in enumerate(texts):
        v = ps.evaluate(EvalInput(direction=direction, channel="webchat" if direction == "inbound" else "webdesk",
                                  text=text, first_in_conversation=direction == "outbound" and first,
                                  conversation="c-zoe"))
        if direction == "outbound":
            first = False
        await h.message(f"t{i}", "c-zoe", direction, text, client=client,
                        action=v.action, rules=[{"rule": x.rule, "action": x.action} for x in v.matched],
                        policy_version=ps.version)
    return h


async def test_backtest_reports_exactly_the_changed_verdicts(tmp_path: Path) -> None:
    v1 = load_policy_dir(write_policies(tmp_path / "v1", V1))
    v2 = load_policy_dir(write_policies(tmp_path / "v2", V2))
    j = await Journal.open(tmp_path / "data")
    try:
        h = await record(j, v1)
        same = await backtest(j, v1, {})
        assert same["compared"] == 7 and same["changed"] == 0 and same["rules"] == {}
        rep = await backtest(j, v2, {}, examples=1)
    finally:
        await j.close()
    assert rep["compared"] == 7 and rep["changed"] == 4
    assert rep["transitions"] == {"flag->quarantine": 2, "quarantine->allow": 1, "allow->flag": 1}
    rules = rep["rules"]
    assert set(rules) == {"F-001", "Q-001", "P-001"}
    assert (rules["F-001"]["action_changed"], rules["F-001"]["added"], rules["F-001"]["removed"]) == (2, 0, 0)
    assert (rules["Q-001"]["removed"], rules["Q-001"]["changed"]) == (1, 1)
    assert (rules["P-001"]["added"], rules["P-001"]["changed"]) == (2, 2)
    ex = rules["Q-001"]["examples"][0]
    assert ex["message_id"] == h.ids["t4"] and ex["recorded"] == {"action": "quarantine", "rules": ["Q-001"]}
    assert ex["proposed"] == {"action": "allow", "rules": []}
    assert len(rules["P-001"]["examples"]) == 1
    assert rep["recorded_policy_versions"] == {v1.version: 7} and rep["proposed_policy_version"] == v2.version


async def test_backtest_since_and_the_cli(tmp_path: Path) -> None:
    v1 = load_policy_dir(write_policies(tmp_path / "v1", V1))
    write_policies(tmp_path / "v2", V2)
    j = await Journal.open(tmp_path / "data")
    try:
        await record(j, v1)
    finally:
        await j.close()
    cfg = write_config(tmp_path / "config.yaml", compliance_config(tmp_path / "data", tmp_path / "v1"))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    run = lambda *a: subprocess.run([sys.executable, "-m", "relay.cli", "policy", "backtest", *a, "--config", str(cfg)],
                                    cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    r = run(str(tmp_path / "v2"), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["changed"] == 4
    r = run(str(tmp_path / "v2"))
    assert "F-001" in r.stdout and "flag->quarantine" in r.stdout
    r = run(str(tmp_path / "v2"), "--since", "2999-01-01", "--json")
    assert json.loads(r.stdout)["compared"] == 0
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.yaml").write_text("schema: relay-policy/v1\npolicy: {id: x}\nrules:\n  - {id: A, action: explode}\n")
    r = run(str(tmp_path / "bad"))
    assert r.returncode == 2 and "x.yaml" in r.stderr
    assert parse_time("2999-01-01") is not None


async def test_shadow_report_compares_journaled_shadow_verdicts(tmp_path: Path) -> None:
    v1 = load_policy_dir(write_policies(tmp_path / "v1", V1))
    v2 = load_policy_dir(write_policies(tmp_path / "v2", V2))
    j = await Journal.open(tmp_path / "data")
    try:
        h = await record(j, v1)
        for label in ("t2", "t5"):
            rows = await j.fetchall("SELECT body_json, conversation FROM events WHERE kind='message.received'"
                                    " AND json_extract(body_json, '$.id') = ?", (h.ids[label],))
            b = json.loads(rows[0]["body_json"])
            v = v2.evaluate(EvalInput(direction=b["direction"], channel=b["channel"], text=b["text"]))
            await j.append("policy.shadow_verdict", {"message_id": b["id"], "action": v.action, "shadow": True,
                                                     "rules": [{"rule": x.rule, "action": x.action} for x in v.matched],
                                                     "policy_version": v2.version}, "c-zoe")
        rep = await shadow_report(j)
    finally:
        await j.close()
    assert rep["compared"] == 2 and rep["changed"] == 2
    assert rep["transitions"] == {"flag->quarantine": 1, "allow->flag": 1}
    assert rep["shadow_policy_versions"] == {v2.version: 2}


async def test_shadow_policies_in_a_running_relay_are_journaled_and_compared(tmp_path: Path) -> None:
    from relay.app import RelayApp
    from tests.compliance_support import memory_compliance_config, until
    live = write_policies(tmp_path / "live", V1)
    shadow = write_policies(tmp_path / "shadow", V2)
    cfg = memory_compliance_config(tmp_path / "data", live)
    cfg["policies"]["shadow"] = str(shadow)
    app = await RelayApp.start(cfg)
    try:
        clients, staff = app.channels["clients"], app.channels["staff"]
        await clients.inject("u1", "is this guaranteed?", "u1:1")
        await clients.inject("u1", "text me on whatsapp", "u1:2")
        await clients.inject("u1", "hello", "u1:3")
        await until(lambda: len([o for o in staff.sent if o.kind == "message"]) == 3)
        rep = await shadow_report(app.journal)
    finally:
        await app.stop()
    assert rep["compared"] == 3 and rep["changed"] == 2
    assert rep["transitions"] == {"flag->quarantine": 1, "allow->flag": 1}
    assert set(rep["rules"]) == {"F-001", "P-001"}

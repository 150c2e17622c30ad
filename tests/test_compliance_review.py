"""Supervision end to end: quarantine, decisions, SLA escalation and alerts, through a running relay."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from relay.app import RelayApp
from relay.compliance.review import ReviewError, decide, load_items, settings_of, stats, sweep
from tests.compliance_support import memory_compliance_config, until, write_config, write_policies

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
async def relay(tmp_path: Path):
    cfg = memory_compliance_config(tmp_path / "data", write_policies(tmp_path / "policies"))
    write_config(tmp_path / "config.yaml", cfg)
    app = await RelayApp.start(cfg)
    try:
        yield app
    finally:
        await app.stop()


async def conversation_with_ann(app: RelayApp) -> str:
    clients, staff = app.channels["clients"], app.channels["staff"]
    r = await clients.inject("u1", "hello, I want to invest", "u1:1", display="Una")
    await until(lambda: any(o.to.user == "ann" and o.kind == "message" for o in staff.sent))
    return r.conversation


async def events(app: RelayApp, kind: str) -> list[dict]:
    rows = await app.journal.fetchall("SELECT body_json FROM events WHERE kind = ? ORDER BY seq", (kind,))
    return [json.loads(r["body_json"]) for r in rows]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "relay.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)


async def test_released_quarantined_reply_reaches_the_client_via_the_cli(relay: RelayApp, tmp_path: Path) -> None:
    clients, staff = relay.channels["clients"], relay.channels["staff"]
    conv = await conversation_with_ann(relay)
    r = await staff.inject("ann", "buy now, before the announcement", "ann:1", chat=conv)
    await asyncio.sleep(0.2)
    assert not [o for o in clients.sent if "announcement" in o.text]
    items = await load_items(relay.journal)
    assert items[r.message_id].state == "open" and items[r.message_id].action == "quarantine"
    cfg = str(tmp_path / "config.yaml")
    listed = await asyncio.to_thread(cli, "review", "list", "--config", cfg, "--json")
    assert listed.returncode == 0, listed.stderr
    row = next(x for x in json.loads(listed.stdout) if x["message_id"] == r.message_id)
    assert row["rules"][0]["rule"] == "Q-001" and row["rules"][0]["matched"] == ["before the announcement"]
    done = await asyncio.to_thread(cli, "review", "decide", r.message_id, "release", "--as", "carol",
                                   "--reason", "public after 16:00 release", "--config", cfg, "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["state"] == "released" and result["reviewer"] == "carol"
    await until(lambda: any("before the announcement" in o.text for o in clients.sent))
    out = next(o for o in clients.sent if "before the announcement" in o.text)
    assert out.to.user == "u1"
    decided = await events(relay, "review.decided")
    assert decided[-1] == {"message_id": r.message_id, "decision": "release", "reviewer": "carol",
                           "reason": "public after 16:00 release"}
    again = await asyncio.to_thread(cli, "review", "decide", r.message_id, "reject", "--as", "carol",
                                    "--reason", "x", "--config", cfg)
    assert again.returncode == 2 and "already decided: release by carol" in again.stderr


async def test_reject_never_delivers_and_tells_the_sender(relay: RelayApp) -> None:
    clients, staff = relay.channels["clients"], relay.channels["staff"]
    conv = await conversation_with_ann(relay)
    r = await staff.inject("ann", "an insider told me", "ann:2", chat=conv)
    out = await decide(relay, r.message_id, "reject", "dave", "inside information")
    assert out["state"] == "rejected" and out["role"] == "supervisor"
    await until(lambda: any(o.kind == "notice" and o.to.user == "ann" and "reviewed by compliance" in o.text
                            for o in staff.sent))
    await asyncio.sleep(0.1)
    assert not any("insider" in o.text for o in clients.sent)


async def test_decision_rules_roles_and_escalation(relay: RelayApp) -> None:
    clients, staff = relay.channels["clients"], relay.channels["staff"]
    conv = await conversation_with_ann(relay)
    flagged = await clients.inject("u1", "is the return guaranteed?", "u1:2")
    held = await staff.inject("ann", "insider view: buy", "ann:3", chat=conv)
    with pytest.raises(ReviewError, match="not a configured reviewer"):
        await decide(relay, flagged.message_id, "compliant", "mallory")
    with pytest.raises(ReviewError, match="release and reject are for quarantined messages"):
        await decide(relay, flagged.message_id, "release", "carol")
    with pytest.raises(ReviewError, match="release it .delivered. or reject it"):
        await decide(relay, held.message_id, "compliant", "carol")
    with pytest.raises(ReviewError, match="needs a --reason"):
        await decide(relay, flagged.message_id, "escalate", "carol")
    with pytest.raises(ReviewError, match="no review item"):
        await decide(relay, "m-nope", "compliant", "carol")
    await decide(relay, flagged.message_id, "escalate", "carol", "client asks about guarantees; needs a supervisor")
    with pytest.raises(ReviewError, match="escalated to supervisors; carol is a reviewer"):
        await decide(relay, flagged.message_id, "false-positive", "carol", "meh")
    await decide(relay, flagged.message_id, "annotate", "carol", "called the client back")
    rows = await relay.journal.fetchall("SELECT state, decided_by FROM review_queue WHERE message_id = ?", (flagged.message_id,))
    assert (rows[0]["state"], rows[0]["decided_by"]) == ("escalated", "carol")
    out = await decide(relay, flagged.message_id, "non-compliant", "dave", "promissory language from client side")
    assert out["state"] == "non-compliant"
    await decide(relay, flagged.message_id, "annotate", "erin", "closed after training")
    item = (await load_items(relay.journal))[flagged.message_id]
    assert [d["decision"] for d in item.decisions] == ["escalate", "annotate", "non-compliant", "annotate"]
    assert all(d["time"] and d["reviewer"] and d["reason"] for d in item.decisions)
    await until(lambda: any(o.to.user == "compliance-room" and "escalated to supervisors by carol" in o.text
                            for o in staff.sent))
    s = stats(await load_items(relay.journal), time.time(), settings_of(relay))
    assert s["open"] == 1 and s["open_by_rule"]["Q-001"]["total"] == 1
    assert s["decisions_per_reviewer"]["carol"] == {"escalate": 1, "annotate": 1}
    assert s["decisions_per_reviewer"]["dave"] == {"non-compliant": 1}


async def notify_alerts(app: RelayApp, message_id: str) -> int:
    """How many `notify` alerts for `message_id` were queued to the compliance room."""
    rows = await app.journal.fetchall(
        "SELECT COUNT(*) AS n FROM deliveries WHERE json_extract(to_json, '$.user') = 'compliance-room' "
        "AND json_extract(out_json, '$.text') LIKE '[relay alert]%' AND json_extract(out_json, '$.text') LIKE ?",
        (f"%message {message_id}%",))
    return int(rows[0]["n"])


async def test_sla_breach_escalates_and_alerts_once_and_notify_rules_alert(relay: RelayApp) -> None:
    staff = relay.channels["staff"]
    conv = await conversation_with_ann(relay)
    held = await staff.inject("ann", "insider tip for you", "ann:4", chat=conv)
    first = await sweep(relay)
    # relay's own background sweep may get to the new verdict first; either way, one alert
    assert first["sla_breaches"] == [] and first["notified"] in ([held.message_id], [])
    assert await notify_alerts(relay, held.message_id) == 1
    await until(lambda: any(o.to.user == "compliance-room" and "Q-001" in o.text and held.message_id in o.text
                            for o in staff.sent))
    later = await sweep(relay, now=time.time() + 25 * 3600)
    assert later["sla_breaches"] == [held.message_id] and later["notified"] == []
    await until(lambda: any(o.to.user == "compliance-room" and "SLA breach" in o.text for o in staff.sent))
    assert (await sweep(relay, now=time.time() + 26 * 3600))["sla_breaches"] == []
    item = (await load_items(relay.journal))[held.message_id]
    assert item.state == "escalated" and item.sla_breached
    assert item.decisions[-1]["reviewer"] == "relay" and "24h" in item.decisions[-1]["reason"]
    with pytest.raises(ReviewError, match="escalated to supervisors"):
        await decide(relay, held.message_id, "release", "carol")
    await decide(relay, held.message_id, "release", "dave", "cleared late")
    s = stats(await load_items(relay.journal), time.time() + 30 * 3600, settings_of(relay))
    assert [b["message_id"] for b in s["sla_breaches"]] == [held.message_id]
    alerts = [o for o in staff.sent if o.to.user == "compliance-room"]
    assert len([a for a in alerts if "SLA breach" in a.text]) == 1
    await staff.inject("ann", "another insider view", "ann:5", chat=conv)
    assert (await sweep(relay, now=time.time() + 2 * 86400))["notified"] == []   # stale: cursor moves, no alert
    assert (await sweep(relay))["notified"] == []


RULE_LEVEL = """\
schema: relay-policy/v1
policy: {id: rule-level, version: 1}
rules:
  - id: Q-009
    title: Off-channel request
    match: {keywords: [whatsapp]}
    action: quarantine
    sla: 2h
    notify: true
"""


async def test_a_rules_own_sla_and_notify_drive_escalation_and_alerts(tmp_path: Path) -> None:
    cfg = memory_compliance_config(tmp_path / "data", write_policies(tmp_path / "policies", RULE_LEVEL),
                                   compliance={"alerts": {"channel": "staff", "to": "compliance-room"},
                                               "sla": {"quarantine": "24h"}, "sweep": "1h"})
    app = await RelayApp.start(cfg)
    try:
        clients, staff = app.channels["clients"], app.channels["staff"]
        held = await clients.inject("u9", "message me on whatsapp", "u9:1")
        item = (await load_items(app.journal))[held.message_id]
        assert item.sla(settings_of(app), app.policies) == 2 * 3600
        # relay's own background sweep may get to the new verdict first; either way the notify
        # alert goes out exactly once
        assert (await sweep(app))["notified"] in ([held.message_id], [])
        assert await notify_alerts(app, held.message_id) == 1
        assert (await sweep(app, now=time.time() + 3 * 3600))["sla_breaches"] == [held.message_id]
        await until(lambda: any(o.to.user == "compliance-room" and "SLA breach" in o.text and "2h" in o.text
                                for o in staff.sent))
    finally:
        await app.stop()


async def test_policy_files_reject_a_malformed_sla(tmp_path: Path) -> None:
    from relay.policy import PolicyLoadError, load_policy_dir
    with pytest.raises(PolicyLoadError) as err:
        load_policy_dir(write_policies(tmp_path / "p", RULE_LEVEL.replace("sla: 2h", "sla: soon")))
    assert any("test.yaml:" in e and "sla" in e for e in err.value.errors), err.value.errors

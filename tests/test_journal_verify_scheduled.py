"""`relay run` verifies the journal on a schedule: journaled runs, /healthz, /metrics, an alert on a fault."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from relay.app import RelayApp
from relay.compliance.verification import VerificationError, schedule_of
from relay.journal import verified
from tests.compliance_support import memory_compliance_config, until, write_policies


async def runs(app: RelayApp) -> list[dict[str, Any]]:
    rows = await app.journal.fetchall("SELECT body_json FROM events WHERE kind='journal.verified' ORDER BY seq")
    return [json.loads(r["body_json"]) for r in rows]


async def wait_runs(app: RelayApp, pred: Any, timeout: float = 20.0) -> list[dict[str, Any]]:
    import asyncio
    for _ in range(int(timeout / 0.05)):
        found = await runs(app)
        if pred(found):
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"no such journal.verified runs: {await runs(app)}")


async def get(app: RelayApp, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(app.base_url + path) as resp:
        return resp.status, await resp.text()


@pytest.fixture
async def relay(tmp_path: Path):
    """Incremental runs every 0.3 s; a full one every 2 s (in case a run marked the row good
    between its commit and the test's tampering: the full run still finds it)."""
    cfg = memory_compliance_config(tmp_path / "data", write_policies(tmp_path / "policies"),
                                   journal={"checkpoint_every": 5, "checkpoint_seconds": 0.2, "verify_every": "0.3s",
                                            "verify_full_every": "2s"})
    app = await RelayApp.start(cfg)
    try:
        yield app
    finally:
        await app.stop()


async def test_runs_are_journaled_full_first_then_incremental(relay: RelayApp) -> None:
    clients = relay.channels["clients"]
    for i in range(6):
        await clients.inject("u1", f"hello {i}", f"u1:{i}", display="Una")
    found = await wait_runs(relay, lambda rs: len(rs) >= 3 and any(r["mode"] == "incremental" and r["count"] for r in rs))
    assert found[0]["mode"] == "full" and found[0]["from_seq"] == 1 and found[0]["ok"]
    inc = next(r for r in found if r["mode"] == "incremental" and r["count"])
    assert inc["ok"] and inc["from_seq"] > 1 and inc["to_seq"] >= inc["from_seq"] and inc["duration_s"] >= 0
    assert verified.load(relay.config.data_dir) is not None
    status, body = await get(relay, "/healthz")
    assert status == 200 and json.loads(body)["checks"]["journal_verify"]["ok"] is True
    status, text = await get(relay, "/metrics")
    assert 'relay_check_ok{check="journal_verify"} 1' in text and "relay_journal_verified_seq " in text


async def test_a_planted_fault_is_journaled_alerted_once_and_shown(relay: RelayApp) -> None:
    clients, staff = relay.channels["clients"], relay.channels["staff"]
    await clients.inject("u1", "hello", "u1:0", display="Una")
    await wait_runs(relay, lambda rs: any(r["ok"] for r in rs) and verified.load(relay.config.data_dir) is not None)
    mark = verified.load(relay.config.data_dir)
    assert mark is not None
    await clients.inject("u1", "a statement please", "u1:1", display="Una")
    rows = await relay.journal.fetchall("SELECT seq FROM events WHERE kind='message.received' AND seq > ? "
                                        "ORDER BY seq DESC LIMIT 1", (mark.seq,))
    bad = rows[0]["seq"]
    with sqlite3.connect(relay.config.data_dir / "journal.sqlite3") as db:
        db.execute("UPDATE events SET body_json=replace(body_json, 'statement', 'invoice') WHERE seq=?", (bad,))
    found = await wait_runs(relay, lambda rs: sum(1 for r in rs if not r["ok"]) >= 2)
    failed = [r for r in found if not r["ok"]]
    assert {(r["first_bad_seq"], r["problem"]) for r in failed} == {(bad, "hash mismatch")}
    await until(lambda: any("[relay verify]" in o.text for o in staff.sent), timeout=10)
    alerts = [o for o in staff.sent if "[relay verify]" in o.text]
    assert len(alerts) == 1 and alerts[0].to.user == "compliance-room" and f"seq {bad}: hash mismatch" in alerts[0].text
    status, body = await get(relay, "/healthz")
    check = json.loads(body)["checks"]["journal_verify"]
    assert status == 503 and check["ok"] is False and f"seq {bad}" in check["detail"]
    status, text = await get(relay, "/metrics")
    assert 'relay_check_ok{check="journal_verify"} 0' in text and "relay_journal_verify_failures 1" in text


def test_schedule_defaults_and_errors() -> None:
    s = schedule_of({})
    assert (s.every, s.full_every) == (3600.0, 7 * 86400.0)
    assert schedule_of({"journal": {"verify_every": "15m", "verify_full_every": "1d"}}).every == 900.0
    with pytest.raises(VerificationError, match="journal.verify_every"):
        schedule_of({"journal": {"verify_every": "soon"}})


async def test_a_fault_before_the_recorded_checkpoint_stands_until_a_full_verify_passes(relay: RelayApp) -> None:
    from relay.compliance.verification import verify_action

    await relay.channels["clients"].inject("u1", "a statement please", "u1:0", display="Una")
    await wait_runs(relay, lambda rs: any(r["ok"] for r in rs) and verified.load(relay.config.data_dir) is not None)
    rows = await relay.journal.fetchall("SELECT seq FROM events WHERE kind='message.received' ORDER BY seq LIMIT 1")
    bad = rows[0]["seq"]
    assert bad < verified.load(relay.config.data_dir).seq  # type: ignore[union-attr]
    with sqlite3.connect(relay.config.data_dir / "journal.sqlite3") as db:
        db.execute("UPDATE events SET body_json=replace(body_json, 'statement', 'invoice') WHERE seq=?", (bad,))
    failed = await verify_action(relay, {"full": True})
    assert (failed["ok"], failed["first_bad_seq"], failed["mode"]) == (False, bad, "full")
    passed = await verify_action(relay, {"full": False})
    assert passed["ok"] and passed["mode"] == "incremental"
    check = relay.health.checks["journal_verify"]
    assert check.ok is False and "stands until a full verify passes" in check.detail
    found = await wait_runs(relay, lambda rs: rs[-1]["mode"] == "full" and not rs[-1]["ok"])  # the schedule goes full
    assert found[-1]["first_bad_seq"] == bad

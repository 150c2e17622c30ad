"""Hot-path reads stay flat as the journal grows: every plan uses an index, and each projection
they read through gives what the events say; an older journal is upgraded on open."""

from __future__ import annotations

import logging
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from relay.journal import Journal, lookups, schema
from relay.journal.chain import canonical_json
from relay.compliance.review import load_items
from tests.journal_support import jopen, queued, received, tamper, verdict  # noqa: F401  (jopen is a fixture)
from tests.pg_support import pg_server  # noqa: F401  (a fixture: the session's PostgreSQL server)

SMALL_PARTIAL = ("deliveries_queued", "review_queue_pending", "events_compliance_state")
"""Partial indexes holding only unfinished work (queued deliveries, undecided reviews) or rare
events (holds, erasure requests): walking one whole is bounded by those, not by the journal."""


def _plan(db: sqlite3.Connection, sql: str) -> list[str]:
    params = (None,) * sql.count("?")
    return [row[3] for row in db.execute("EXPLAIN QUERY PLAN " + sql, params)]


async def test_no_hot_path_query_scans_a_growing_table(tmp_path: Path, jopen: Any) -> None:
    j = await jopen(tmp_path)
    await j.append("message.received", received("m1"), "c-1")
    db = sqlite3.connect(j.path)
    try:
        for name, sql in lookups.HOT_PATH.items():
            assert "json_extract" not in sql or "events" not in sql.split("json_extract")[1].split(")")[0], name
            plan = _plan(db, sql)
            assert plan, name
            for step in plan:
                scan = re.match(r"SCAN (\w+)", step)
                if scan is None:
                    continue
                assert any(f"USING INDEX {ix}" in step or f"USING COVERING INDEX {ix}" in step for ix in SMALL_PARTIAL), (
                    f"{name}: {step!r} walks a whole table (plan: {plan})")
    finally:
        db.close()


def test_the_plan_check_sees_a_scan(tmp_path: Path) -> None:
    """The structural assertion above can fail: the old receipt query scanned deliveries."""
    db = sqlite3.connect(tmp_path / "j.sqlite3")
    schema.create_all(db)
    old = ("SELECT body_json FROM events WHERE kind = 'policy.verdict' AND json_extract(body_json, '$.message_id') = ?"
           " ORDER BY seq DESC LIMIT 1")
    assert any(step.startswith("SCAN events") for step in _plan(db, old))
    db.execute("DROP INDEX deliveries_platform")
    assert any(step.startswith("SCAN deliveries") for step in _plan(db, lookups.RECEIPT_DELIVERY))
    db.close()


async def test_latest_verdict_and_received_event_follow_the_events(tmp_path: Path, jopen: Any) -> None:
    j = await jopen(tmp_path)
    rec = await j.append("message.received", received("m1", "hello"), "c-1")
    first = dict(verdict("m1", "flag"), disclaimers=["recorded"])
    await j.append("policy.verdict", first, "c-1")
    await j.append("policy.verdict", dict(verdict("m1", "block"), shadow=True), "c-1")  # never acted on
    later = await j.append("policy.verdict", dict(verdict("m1", "quarantine", review=True), disclaimers=["kept"]), "c-1")
    got = await j.fetchall(lookups.LATEST_VERDICT, ("m1",))
    assert [r["body_json"] for r in got] == [j_body(later)]
    got = await j.fetchall(lookups.RECEIVED_EVENT, ("m1",))
    assert [(r["seq"], r["conversation"]) for r in got] == [(rec.seq, "c-1")]
    assert await j.fetchall(lookups.LATEST_VERDICT, ("m-none",)) == []


def j_body(ev: Any) -> str:
    return canonical_json(ev.body)


async def test_delivery_lookups_by_platform_id_message_and_conversation(tmp_path: Path, jopen: Any) -> None:
    j = await jopen(tmp_path)
    await j.append("message.received", received("m1", direction="outbound", channel="webdesk", employee="alice"), "c-1")
    await j.append("delivery.queued", queued("d1", "m1", channel="webchat"), "c-1")
    await j.append("delivery.queued", queued("d2", "m1", channel="telegram"), "c-1")
    await j.append("message.delivered", {"delivery_id": "d1", "message_id": "m1", "channel": "webchat",
                                         "platform_id": "w-7", "attempt": 1}, "c-1")
    await j.append("message.delivered", {"delivery_id": "d2", "message_id": "m1", "channel": "telegram",
                                         "platform_id": "template:t-9", "attempt": 1}, "c-1")
    r = await j.fetchall(lookups.RECEIPT_DELIVERY, ("webchat", "w-7", "template:w-7"))
    assert [(x["delivery_id"], x["message_id"], x["conversation"]) for x in r] == [("d1", "m1", "c-1")]
    r = await j.fetchall(lookups.RECEIPT_DELIVERY, ("telegram", "t-9", "template:t-9"))
    assert [x["delivery_id"] for x in r] == ["d2"]
    assert await j.fetchall(lookups.RECEIPT_DELIVERY, ("telegram", "w-7", "template:w-7")) == []
    r = await j.fetchall(lookups.DELIVERED_PLATFORM_ID, ("m1", "webchat"))
    assert [x["platform_id"] for x in r] == ["w-7"]
    assert [x[0] for x in await j.fetchall(lookups.CONVERSATION_HAS_OUTBOUND, ("c-1", "webchat"))] == [1]
    assert await j.fetchall(lookups.CONVERSATION_HAS_OUTBOUND, ("c-2", "webchat")) == []


async def test_policy_loads_name_the_newest_live_and_shadow_sets(tmp_path: Path, jopen: Any) -> None:
    j = await jopen(tmp_path)
    assert await j.fetchall(lookups.LATEST_POLICY_LOADED, (0,)) == []
    for body in ({"version": "v1", "files": {}}, {"version": "s1", "files": {}, "shadow": True},
                 {"version": "v2", "files": {}}, {"version": "s2", "files": {}, "shadow": True}):
        await j.append("policy.loaded", body)
    assert [r["v"] for r in await j.fetchall(lookups.LATEST_POLICY_LOADED, (0,))] == ["v2"]
    assert [r["v"] for r in await j.fetchall(lookups.LATEST_POLICY_LOADED, (1,))] == ["s2"]


async def _review_journal(j: Journal) -> None:
    for n in range(1, 5):
        mid = f"m{n}"
        await j.append("message.received", received(mid, f"text {n}"), f"c-{n}")
        await j.append("policy.verdict", verdict(mid, "quarantine" if n % 2 else "flag", review=True, rules=["R1"]), f"c-{n}")
    await j.append("message.received", received("m5", "no review"), "c-5")
    await j.append("policy.verdict", verdict("m5", "allow"), "c-5")
    decide = [("m1", "annotate"), ("m1", "escalate"), ("m2", "compliant"), ("m3", "release"), ("m3", "escalate")]
    for mid, decision in decide:
        await j.append("review.decided", {"message_id": mid, "decision": decision, "reviewer": "carol", "reason": "x"},
                       "c-" + mid[1:])


async def test_review_items_from_projections_equal_a_replay_of_the_events(tmp_path: Path, jopen: Any) -> None:
    j = await jopen(tmp_path)
    await _review_journal(j)
    items = await load_items(j)
    assert sorted(items) == ["m1", "m2", "m3", "m4"]
    assert {m: i.state for m, i in items.items()} == {"m1": "escalated", "m2": "compliant", "m3": "released", "m4": "open"}
    assert [d["decision"] for d in items["m1"].decisions] == ["annotate", "escalate"]
    assert items["m2"].message["text"] == "text 2" and items["m2"].message_seq == 3
    assert items["m4"].action == "flag" and items["m4"].rule_ids() == ["R1"] and items["m4"].conversation == "c-4"
    pending = await load_items(j, pending=True)
    assert {m for m, i in pending.items() if i.is_open} == {m for m, i in items.items() if i.is_open} == {"m1", "m4"}
    assert "m2" not in pending
    for mid, item in pending.items():
        assert item == items[mid]
    one = await load_items(j, "m3")
    assert list(one) == ["m3"] and one["m3"] == items["m3"]
    assert await load_items(j, "m5") == {}


async def test_old_journal_projections_are_rebuilt_on_open(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    j = await Journal.open(tmp_path)
    await _review_journal(j)
    await j.append("policy.loaded", {"version": "v1", "files": {}})
    await j.close()
    db_path = tmp_path / "journal.sqlite3"
    expected = {t: _dump(db_path, t) for t in ("messages", "review_queue", "review_decisions", "policy_loads")}
    tamper(db_path, "DROP TABLE review_decisions", "DROP TABLE policy_loads", "ALTER TABLE messages DROP COLUMN verdict_seq",
           "DELETE FROM meta WHERE key='projections'")  # what a journal of projections version 1 holds
    with caplog.at_level(logging.WARNING, logger="relay.journal"):
        ro = await Journal.open(tmp_path, read_only=True)  # a reader cannot upgrade: it says how to
        await ro.close()
    assert "relay journal rebuild" in caplog.text
    j = await Journal.open(tmp_path)
    try:
        assert {t: _dump(db_path, t) for t in expected} == expected
        assert (await j.fetchall("SELECT value FROM meta WHERE key='projections'"))[0][0] == schema.PROJECTIONS_VERSION
        assert [r["v"] for r in await j.fetchall(lookups.LATEST_POLICY_LOADED, (0,))] == ["v1"]
    finally:
        await j.close()
    caplog.clear()
    ro = await Journal.open(tmp_path, read_only=True)
    await ro.close()
    assert "older relay" not in caplog.text


def _dump(db_path: Path, table: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db_path) as db:
        return db.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()


async def test_postgresql_serves_the_same_lookups_and_upgrades_an_older_journal(pg_server: Any, tmp_path: Path) -> None:
    from relay.journal.pg import PgJournal
    from tests.pg_support import drop_database, new_database, sql

    url = await new_database(pg_server)
    try:
        j = await PgJournal.open(url, data_dir=tmp_path)
        try:
            await _review_journal(j)
            later = await j.append("policy.verdict", dict(verdict("m4", "flag", review=True), disclaimers=["kept"]), "c-4")
            await j.append("policy.loaded", {"version": "v1", "files": {}})
        finally:
            await j.close()
        await sql(url, "UPDATE messages SET verdict_seq = NULL")  # as an older relay left them
        await sql(url, "TRUNCATE review_decisions, policy_loads")
        await sql(url, "DELETE FROM meta WHERE key = 'projections'")
        j = await PgJournal.open(url, data_dir=tmp_path)
        try:
            assert [r["body_json"] for r in await j.fetchall(lookups.LATEST_VERDICT, ("m4",))] == [j_body(later)]
            assert [r["v"] for r in await j.fetchall(lookups.LATEST_POLICY_LOADED, (0,))] == ["v1"]
            items = await load_items(j)
            assert {m: i.state for m, i in items.items()} == {"m1": "escalated", "m2": "compliant", "m3": "released",
                                                              "m4": "open"}
            assert [d["decision"] for d in items["m1"].decisions] == ["annotate", "escalate"]
            assert {m for m, i in (await load_items(j, pending=True)).items() if i.is_open} == {"m1", "m4"}
        finally:
            await j.close()
    finally:
        await drop_database(url)

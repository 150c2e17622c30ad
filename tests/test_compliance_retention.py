"""Retention: erase exactly what is past retention and on no hold; the chain still verifies."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from relay.evidence import ExportFilter, SearchQuery, search, verify_export, write_export
from relay.evidence.keys import load_private_key, load_public_key
from relay.journal import Journal
from relay.retention import (YEAR, RetentionError, add_hold, load_state, parse_duration, release_hold,
                             request_erasure, retention_settings, run_retention)
from tests.compliance_support import History, party

SETTINGS = retention_settings({"default": "6y", "classes": {"mifid2": {"period": "7y", "channels": ["telegram-eu"]}}})


async def history(j: Journal) -> History:
    h = History(j)
    ann, eve, gus = party("webchat", "ann", "Ann"), party("telegram-eu", "eve", "Eve"), party("webchat", "gus", "Gus")
    shared = b"shared statement bytes"
    await h.message("ann1", "c-ann", "inbound", "ann secret plan", client=ann, attachments=[("st.pdf", "application/pdf", shared)])
    await h.message("ann2", "c-ann", "outbound", "reply to ann", client=ann, attachments=[("own.txt", "text/plain", b"only ann")])
    await h.message("eve1", "c-eve", "inbound", "eve mifid message", client=eve)
    await h.message("gus1", "c-gus", "inbound", "gus held message", client=gus, attachments=[("st.pdf", "application/pdf", shared)])
    return h


@pytest.fixture
async def journal(tmp_path: Path):
    j = await Journal.open(tmp_path / "data", checkpoint_every=5)
    yield j
    await j.close()


async def body(j: Journal, seq: int) -> dict:
    return json.loads((await j.fetchall("SELECT body_json FROM events WHERE seq=?", (seq,)))[0][0])


async def test_retention_erases_exactly_what_is_past_and_not_held_and_the_chain_verifies(journal: Journal, tmp_path: Path) -> None:
    j = journal
    h = await history(j)
    hold = await add_hold(j, "conversation", "c-gus", "SEC inquiry 2026-17", "dave")
    at = time.time() + 6.5 * YEAR
    dry = await run_retention(j, SETTINGS, "ops", at=at, dry_run=True)
    assert sorted(dry["would_erase"]["message_ids"]) == sorted([h.ids["ann1"], h.ids["ann2"]])
    result = await run_retention(j, SETTINGS, "ops", at=at)
    assert result["erased"]["messages"] == 2 and result["held_by"] == {hold["hold_id"]: [h.ids["gus1"]]}
    for label in ("ann1", "ann2"):
        b = await body(j, h.seqs[label])
        assert "text" not in b and b["erased"]["reason"] == "retention period ended"
        assert all("name" not in a and len(a["sha256"]) == 64 for a in b["attachments"])
        assert b["raw_sha256"] and await j.get_blob(b["raw_sha256"]) is None
    own = (await body(j, h.seqs["ann2"]))["attachments"][0]["sha256"]
    assert await j.get_blob(own) is None
    shared = (await body(j, h.seqs["gus1"]))["attachments"][0]["sha256"]
    assert await j.get_blob(shared) == b"shared statement bytes"  # still named by the held message
    for label in ("eve1", "gus1"):
        assert "text" in await body(j, h.seqs[label])
    queued = await j.fetchall("SELECT out_json FROM deliveries WHERE message_id=?", (h.ids["ann1"],))
    assert "ann secret plan" not in queued[0][0]
    raw_rows = await j.fetchall("SELECT body_json FROM events")
    assert not any("ann secret plan" in r[0] or "reply to ann" in r[0] for r in raw_rows)
    erased_ev = await j.fetchall("SELECT body_json FROM events WHERE kind='retention.erased'")
    assert len(erased_ev) == 1 and json.loads(erased_ev[0][0])["actor"] == "ops"
    report = await j.verify()
    assert report.ok, report.line()
    assert await search(j, SearchQuery(text="secret")) == []
    again = await run_retention(j, SETTINGS, "ops", at=at)
    assert again["erased"]["messages"] == 0

    await release_hold(j, hold["hold_id"], "inquiry closed", "dave")
    later = await run_retention(j, SETTINGS, "ops", at=time.time() + 7.5 * YEAR)
    assert sorted(later["erased"]["message_ids"]) == sorted([h.ids["eve1"], h.ids["gus1"]])
    assert await j.get_blob(shared) is None
    assert (await j.verify()).ok


async def test_erased_content_exports_and_verifies(journal: Journal, tmp_path: Path) -> None:
    j = journal
    h = await history(j)
    await run_retention(j, SETTINGS, "ops", at=time.time() + 6.5 * YEAR)
    await j.close()
    j2 = await Journal.open(tmp_path / "data", read_only=True)
    try:
        key = load_private_key(tmp_path / "data" / "keys" / "journal_ed25519")
        await write_export(j2, tmp_path / "x", ExportFilter(conversation="c-ann"), key)
        page = (tmp_path / "x" / "transcripts" / "c-ann.html").read_text()
        assert "content erased" in page and "ann secret plan" not in page
        report = verify_export(tmp_path / "x", load_public_key(str(tmp_path / "data" / "keys" / "journal_ed25519.pub")))
        assert report.ok, report.problems
    finally:
        await j2.close()


async def test_holds_by_client_and_employee_block_erasure(journal: Journal) -> None:
    j = journal
    h = await history(j)
    await add_hold(j, "client", "webchat:ann", "litigation", "dave")
    await add_hold(j, "employee", "alice", "internal review", "dave", employees=["alice"])
    result = await run_retention(j, SETTINGS, "ops", at=time.time() + 8 * YEAR)
    assert result["erased"]["messages"] == 0
    holds, _ = await load_state(j)
    assert {x.scope for x in holds.values()} == {"client", "employee"}


async def test_erasure_request_restricts_search_and_export(journal: Journal, tmp_path: Path) -> None:
    j = journal
    h = await history(j)
    req = await request_erasure(j, "ann", "DSAR-0042", "erin")
    assert req["client"] == "webchat:ann"
    _, restricted = await load_state(j)
    assert restricted == {"webchat:ann": req["seq"]}
    assert await search(j, SearchQuery(text="secret"), restricted) == []
    hits = await search(j, SearchQuery(text="secret"), restricted, include_restricted=True)
    assert [x["id"] for x in hits] == [h.ids["ann1"]]
    # restricted until its retention ends, not erased before
    result = await run_retention(j, SETTINGS, "ops", at=time.time() + 1 * YEAR)
    assert result["erased"]["messages"] == 0
    assert "text" in await body(j, h.seqs["ann1"])


async def test_bad_requests_are_clear_errors(journal: Journal) -> None:
    j = journal
    await history(j)
    with pytest.raises(RetentionError, match="no conversation 'c-nope'"):
        await add_hold(j, "conversation", "c-nope", "x", "dave")
    with pytest.raises(RetentionError, match="needs a --reason"):
        await add_hold(j, "conversation", "c-ann", " ", "dave")
    with pytest.raises(RetentionError, match="not 'desk'"):
        await add_hold(j, "desk", "x", "y", "dave")
    with pytest.raises(RetentionError, match="no active legal hold 'h-x'"):
        await release_hold(j, "h-x", "y", "dave")
    with pytest.raises(RetentionError, match="no client 'zed'"):
        await request_erasure(j, "zed", "r", "erin")
    with pytest.raises(RetentionError, match="not a duration"):
        parse_duration("six years")
    assert parse_duration("24h") == 86400 and parse_duration("90d") == 90 * 86400
    assert SETTINGS.for_channel("telegram-eu").name == "mifid2" and SETTINGS.for_channel("webchat").name == "default"


async def test_a_changed_tombstone_is_caught_and_an_interrupted_erasure_is_completed(journal: Journal, tmp_path: Path) -> None:
    import sqlite3
    from relay.retention import complete_pending
    j = journal
    h = await history(j)
    await run_retention(j, SETTINGS, "ops", at=time.time() + 6.5 * YEAR)
    seq = h.seqs["ann1"]
    original = (await j.fetchall("SELECT body_json FROM events WHERE seq=?", (seq,)))[0][0]
    db = sqlite3.connect(j.path)
    forged = json.loads(original)
    forged["direction"] = "outbound"
    db.execute("UPDATE events SET body_json=? WHERE seq=?", (json.dumps(forged, sort_keys=True, separators=(",", ":")), seq))
    db.commit()
    report = await j.verify()
    assert not report.ok and report.first_bad_seq == seq and report.problem == "hash mismatch"
    db.execute("UPDATE events SET body_json=? WHERE seq=?", (original, seq))
    db.commit()
    db.close()
    assert (await j.verify()).ok


async def test_an_interrupted_erasure_is_completed_on_the_next_run(journal: Journal) -> None:
    from relay.evidence.collect import iter_events
    from relay.retention import active_holds, complete_pending, plan_erasure
    j = journal
    h = await history(j)
    events = await iter_events(j)
    plan = plan_erasure(events, SETTINGS, time.time() + 6.5 * YEAR, active_holds(events))
    await j.append("retention.erased", plan.event_body("retention period ended", "ops"))  # then "crash"
    assert "text" in await body(j, h.seqs["ann1"])
    assert (await j.verify()).ok
    assert await complete_pending(j) == len(plan.seqs)
    assert "text" not in await body(j, h.seqs["ann1"])
    assert (await j.verify()).ok


async def test_notices_carrying_history_age_out_with_their_conversation(journal: Journal) -> None:
    j = journal
    await history(j)
    await add_hold(j, "conversation", "c-gus", "inquiry", "dave")
    for conv in ("c-ann", "c-gus"):
        await j.append("delivery.queued", {"delivery_id": f"d-{conv}", "message_id": f"a-{conv}", "channel": "webdesk",
                                           "to": party("webdesk", "bob"), "out": {"kind": "notice", "text": f"history of {conv}: secret",
                                                                                  "attachments": []}}, conv)
    result = await run_retention(j, SETTINGS, "ops", at=time.time() + 6.5 * YEAR)
    assert "a-c-gus" in next(iter(result["held_by"].values()))
    rows = await j.fetchall("SELECT conversation, body_json FROM events WHERE kind='delivery.queued' AND json_extract(body_json, '$.message_id') LIKE 'a-%'")
    texts = {r["conversation"]: json.loads(r["body_json"])["out"].get("text") for r in rows}
    assert texts == {"c-ann": None, "c-gus": "history of c-gus: secret"}
    assert (await j.verify()).ok


async def test_erasure_removes_the_inline_raw_payload_and_finishes_older_tombstones_that_kept_it(
        journal: Journal) -> None:
    """The hub keeps raw payloads up to 16 KiB inline (base64). Erasure takes them away with the
    text (the digest stays); tombstones made before that rule are erased again on the next run."""
    import base64

    from relay.evidence.collect import iter_events
    from relay.retention import LEFTOVER_REASON, _legacy_tombstone, active_holds, apply_plan, plan_erasure
    j = journal
    h = History(j)
    ann, bob = party("webchat", "ann", "Ann"), party("telegram-eu", "bob", "Bob")  # bob: 7-year class
    await h.message("ann1", "c-ann", "inbound", "ann inline secret", client=ann, inline_raw=True)
    await h.message("bob1", "c-bob", "inbound", "bob inline secret", client=bob, inline_raw=True)
    original = await body(j, h.seqs["ann1"])
    assert b"ann inline secret" in base64.b64decode(original["raw_inline"])

    await run_retention(j, SETTINGS, "ops", at=time.time() + 6.5 * YEAR)
    stone = await body(j, h.seqs["ann1"])
    assert "raw_inline" not in stone and "text" not in stone
    assert stone["raw_digest"] == original["raw_digest"]
    assert (await j.verify()).ok

    # a tombstone as the earlier version made it (raw payload kept), then the next run
    events = await iter_events(j)
    plan = plan_erasure(events, SETTINGS, time.time() + 6.5 * YEAR, active_holds(events), only={h.ids["bob1"]})
    plan.tombstones = {s: _legacy_tombstone(ev.kind, ev.body, "erasure request")
                       for s in plan.seqs for ev in events if ev.seq == s}
    await apply_plan(j, plan, "erasure request", "ops")
    assert "raw_inline" in await body(j, h.seqs["bob1"])
    assert (await j.verify()).ok
    await run_retention(j, SETTINGS, "ops", at=time.time() + 6.5 * YEAR)
    assert "raw_inline" not in await body(j, h.seqs["bob1"])
    rows = await j.fetchall("SELECT body_json FROM events WHERE kind='retention.erased'")
    assert any(json.loads(r[0])["reason"] == LEFTOVER_REASON for r in rows)
    assert (await j.verify()).ok

"""Retention: erase exactly what is past retention and on no hold; the chain still verifies."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from relay.evidence import ExportFilter, SearchQuery, search, verify_export, write_export
from relay.evidence.keys import load_private_key, load_public_key
from relay.journal import Journal
from relay.compliance.erasure import run_retention
from relay.compliance.holds import add_hold, load_state, release_hold, request_erasure
from relay.compliance.retention import RetentionError, YEAR, parse_duration, retention_settings
from tests.compliance_support import History, party
from tests.journal_support import Store, store  # noqa: F401  (store is a fixture)

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
async def journal(store: Store):
    """On both backends (the `store` fixture's parameter)."""
    j = await store.open(checkpoint_every=5)
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


async def test_erased_content_exports_and_verifies(journal: Journal, store: Store, tmp_path: Path) -> None:
    j = journal
    h = await history(j)
    await run_retention(j, SETTINGS, "ops", at=time.time() + 6.5 * YEAR)
    await j.close()
    j2 = await store.open_raw(read_only=True)
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


async def test_a_changed_tombstone_is_caught_and_an_interrupted_erasure_is_completed(journal: Journal, store: Store) -> None:
    from relay.compliance.erasure import complete_pending
    j = journal
    h = await history(j)
    await run_retention(j, SETTINGS, "ops", at=time.time() + 6.5 * YEAR)
    seq = h.seqs["ann1"]
    original = (await j.fetchall("SELECT body_json FROM events WHERE seq=?", (seq,)))[0][0]
    forged = json.loads(original)
    forged["direction"] = "outbound"
    await store.update_many("UPDATE events SET body_json=? WHERE seq=?", [(json.dumps(forged, sort_keys=True, separators=(",", ":")), seq)])
    report = await j.verify()
    assert not report.ok and report.first_bad_seq == seq and report.problem == "hash mismatch"
    await store.update_many("UPDATE events SET body_json=? WHERE seq=?", [(original, seq)])
    assert (await j.verify()).ok


async def test_an_interrupted_erasure_is_completed_on_the_next_run(journal: Journal) -> None:
    from relay.evidence.collect import iter_events
    from relay.compliance.erasure import complete_pending
    from relay.compliance.erasure_plan import plan_erasure
    from relay.compliance.holds import active_holds
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
    from relay.compliance.erasure import apply_plan
    from relay.compliance.erasure_plan import LEFTOVER_REASON, _legacy_tombstone, plan_erasure
    from relay.compliance.holds import active_holds
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


# --- display names outside the message bodies: assignments, notices, projections -------------

ANN_NAME, GUS_NAME, EVE_NAME = "Annabel Quill", "Gustav Held", "Evelyn Later"


async def named_history(j: Journal) -> History:
    """Conversations opened by an assignment and handed over (both name the client), with the
    handover's history notice; c-gus will be under a hold, c-eve in the 7-year class."""
    h = History(j)
    ann = party("webchat", "ann", ANN_NAME)
    gus, eve = party("webchat", "gus", GUS_NAME), party("telegram-eu", "eve", EVE_NAME)
    for conv, client in (("c-ann", ann), ("c-gus", gus), ("c-eve", eve)):
        await h.assign(conv, "alice", None, client)
        await h.message(f"{conv}-in", conv, "inbound", f"{conv} first words", client=client)
        await h.message(f"{conv}-out", conv, "outbound", f"{conv} answer", client=client)
        await h.assign(conv, "bob", "alice", client, actor="dave", reason="alice on leave")
        await j.append("delivery.queued", {
            "delivery_id": f"d-h-{conv}", "message_id": f"a-h-{conv}", "channel": "webdesk", "to": party("webdesk", "bob", "Bob"),
            "out": {"kind": "notice", "text": f"history: {client['display']}: {conv} first words", "attachments": [],
                    "origin": party("relay", "relay"), "client": client, "action": "allow", "rules": []}}, conv)
    return h


async def names_in_journal(j: Journal) -> dict[str, list[str]]:
    """Where each display name still appears: event bodies (by kind) and projection columns."""
    found: dict[str, list[str]] = {}
    for name in (ANN_NAME, GUS_NAME, EVE_NAME):
        rows = await j.fetchall("SELECT seq, kind FROM events WHERE instr(body_json, ?) > 0", (name,))
        where = [f"{r['kind']}@{r['seq']}" for r in rows]
        where += [f"conversations:{r[0]}" for r in await j.fetchall("SELECT id FROM conversations WHERE client_display=?", (name,))]
        where += [f"messages:{r[0]}" for r in await j.fetchall("SELECT id FROM messages WHERE sender_display=?", (name,))]
        where += [f"deliveries:{r[0]}" for r in await j.fetchall(
            "SELECT delivery_id FROM deliveries WHERE instr(out_json, ?) > 0 OR instr(to_json, ?) > 0", (name, name))]
        found[name] = where
    return found


async def test_erasure_takes_the_display_name_from_assignments_notices_and_projections(journal: Journal, tmp_path: Path) -> None:
    j = journal
    await named_history(j)
    before = await names_in_journal(j)
    assert any(w.startswith("conversation.assigned@") for w in before[ANN_NAME]) and "conversations:c-ann" in before[ANN_NAME]
    hold = await add_hold(j, "conversation", "c-gus", "SEC inquiry 2026-17", "dave")
    await request_erasure(j, "webchat:ann", "DSAR-0042", "erin")
    result = await run_retention(j, SETTINGS, "ops", at=time.time() + 6.5 * YEAR)
    assert result["erased"]["conversations"] == ["c-ann"] and list(result["held_by"]) == [hold["hold_id"]]
    after = await names_in_journal(j)
    assert after[ANN_NAME] == []
    # held, and not yet past its 7-year class: every name kept
    assert after[GUS_NAME] == before[GUS_NAME] and after[EVE_NAME] == before[EVE_NAME]
    stones = await j.fetchall("SELECT body_json FROM events WHERE kind='conversation.assigned' AND conversation='c-ann'")
    assert [json.loads(r[0])["client"] for r in stones] == [{"channel": "webchat", "user": "ann"}] * 2
    assert all(json.loads(r[0])["erased"] == {"reason": "retention period ended"} for r in stones)
    report = await j.verify()
    assert report.ok, report.line()
    await j.rebuild()  # the projections a replay gives agree
    assert (await names_in_journal(j))[ANN_NAME] == []
    row = (await j.fetchall("SELECT client_channel, client_user, client_display FROM conversations WHERE id='c-ann'"))[0]
    assert tuple(row) == ("webchat", "ann", None)

    key = load_private_key(tmp_path / "data" / "keys" / "journal_ed25519")
    await write_export(j, tmp_path / "x", ExportFilter(conversation="c-ann"), key)
    exported = (tmp_path / "x" / "events.jsonl").read_text(encoding="utf-8")
    assert ANN_NAME not in exported and '"kind":"conversation.assigned"' in exported.replace(" ", "")
    report = verify_export(tmp_path / "x", load_public_key(str(tmp_path / "data" / "keys" / "journal_ed25519.pub")))
    assert report.ok, report.problems

    await release_hold(j, hold["hold_id"], "inquiry closed", "dave")
    later = await run_retention(j, SETTINGS, "ops", at=time.time() + 7.5 * YEAR)
    assert sorted(later["erased"]["conversations"]) == ["c-eve", "c-gus"]
    assert await names_in_journal(j) == {ANN_NAME: [], GUS_NAME: [], EVE_NAME: []}
    assert (await j.verify()).ok


async def test_assignments_keep_the_name_while_a_message_of_the_conversation_is_kept(journal: Journal) -> None:
    """Erasing some of a conversation's messages leaves its assignments alone; a hold placed after
    the messages went keeps them too; the projection then names the client from what is kept."""
    from relay.evidence.collect import iter_events
    from relay.compliance.erasure import apply_plan
    from relay.compliance.erasure_plan import plan_erasure
    from relay.compliance.holds import active_holds
    j = journal
    h = await named_history(j)
    events = await iter_events(j)
    plan = plan_erasure(events, SETTINGS, time.time(), active_holds(events), only={h.ids["c-ann-in"]})
    assert plan.conversations == [] and {ev.kind for ev in events if ev.seq in plan.seqs} == {"message.received", "delivery.queued"}
    await apply_plan(j, plan, "erasure request", "ops")
    kinds = [r["kind"] for r in await j.fetchall("SELECT kind FROM events WHERE instr(body_json, ?) > 0", (ANN_NAME,))]
    assert kinds.count("conversation.assigned") == 2
    row = await j.fetchall("SELECT client_display FROM conversations WHERE id='c-ann'")
    assert row[0][0] == ANN_NAME  # the outbound message and the assignments still name her
    # the rest of c-ann's messages go without their assignments (as an earlier version erased), then a hold
    events = await iter_events(j)
    rest = plan_erasure(events, SETTINGS, time.time(), active_holds(events), only={h.ids["c-ann-out"]})
    mine = {ev.seq for ev in events if h.ids["c-ann-out"] in (ev.body.get("id"), ev.body.get("message_id"))}
    for seq in [s for s in rest.seqs if s not in mine]:
        rest.seqs.remove(seq)
        rest.tombstones.pop(seq)
    await apply_plan(j, rest, "erasure request", "ops")
    hold = await add_hold(j, "client", "webchat:ann", "litigation", "dave")
    result = await run_retention(j, SETTINGS, "ops", at=time.time() + 1 * YEAR)
    assert result["erased"]["conversations"] == [] and result["held_by"][hold["hold_id"]]
    assert (await names_in_journal(j))[ANN_NAME] != []
    await release_hold(j, hold["hold_id"], "closed", "dave")
    result = await run_retention(j, SETTINGS, "ops", at=time.time() + 1 * YEAR)
    assert result["erased"]["conversations"] == ["c-ann"] and result["erased"]["messages"] == 0
    assert (await names_in_journal(j))[ANN_NAME] == []
    assert (await j.verify()).ok


async def test_an_interrupted_erasure_of_assignments_is_completed(journal: Journal) -> None:
    from relay.evidence.collect import iter_events
    from relay.compliance.erasure import complete_pending
    from relay.compliance.erasure_plan import plan_erasure
    from relay.compliance.holds import active_holds
    j = journal
    await named_history(j)
    events = await iter_events(j)
    plan = plan_erasure(events, SETTINGS, time.time() + 6.5 * YEAR, active_holds(events))
    assert sorted(plan.conversations) == ["c-ann", "c-gus"]
    await j.append("retention.erased", plan.event_body("retention period ended", "ops"))  # then "crash"
    assert (await names_in_journal(j))[ANN_NAME] != []
    assert await complete_pending(j) == len(plan.seqs)
    assert (await names_in_journal(j))[ANN_NAME] == [] and (await names_in_journal(j))[GUS_NAME] == []
    assert (await j.verify()).ok


async def test_a_running_relay_forgets_the_erased_name_and_a_later_handover_does_not_journal_it(tmp_path: Path) -> None:
    """The router caches conversations (with the client's display name): after the retention run
    a handover must not write the erased name back into the journal."""
    from relay.compliance.actions import ACTIONS
    from relay.app import RelayApp
    from relay.compliance.handover import handover
    from tests.compliance_support import memory_compliance_config, until, write_policies

    app = await RelayApp.start(memory_compliance_config(tmp_path / "data", write_policies(tmp_path / "policies")))
    try:
        clients, staff = app.channels["clients"], app.channels["staff"]
        r = await clients.inject("u1", "hello there", "u1:1", display=ANN_NAME)
        await until(lambda: any(o.to.user == "ann" for o in staff.sent))
        await staff.inject("ann", "hello to you", "ann:1", chat=r.conversation)
        await until(lambda: any("hello to you" in o.text for o in clients.sent))
        assert (await app.router.get(r.conversation)).client.display == ANN_NAME
        result = await ACTIONS["retention.run"](app, {"actor": "ops", "at": time.time() + 6.5 * YEAR})
        assert result["erased"]["conversations"] == [r.conversation]
        await handover(app, "ann", "ben", "dave", reason="ann left")
        rows = await app.journal.fetchall("SELECT kind, seq FROM events WHERE instr(body_json, ?) > 0", (ANN_NAME,))
        assert [tuple(x) for x in rows] == []
        last = json.loads((await app.journal.fetchall(
            "SELECT body_json FROM events WHERE kind='conversation.assigned' ORDER BY seq DESC LIMIT 1"))[0][0])
        assert last["employee"] == "ben" and last["client"]["user"] == "u1" and not last["client"].get("display")
        assert (await app.journal.verify()).ok
    finally:
        await app.stop()

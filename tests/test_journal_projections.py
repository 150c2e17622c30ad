"""Projections follow the events (one transaction), search works for CJK, rebuild equals incremental."""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from relay.journal import Journal, projections
from relay.journal.chain import canonical_json
from tests.journal_support import Store, jopen, party, queued, received, store, verdict  # noqa: F401  (fixtures)


async def one(j: Any, sql: str, params: tuple[Any, ...] = ()) -> dict[str, Any]:
    got = await j.fetchall(sql, params)
    assert len(got) == 1, got
    return dict(got[0])


async def indexed(store: Store, j: Any, text: str) -> list[int]:
    """Seqs of the messages the search index finds `text` in: FTS5 on SQLite, pg_trgm on PostgreSQL."""
    if store.backend == "sqlite":
        rows = await j.fetchall("SELECT rowid FROM messages_fts WHERE messages_fts MATCH ? ORDER BY rowid", (f'"{text}"',))
    else:
        rows = await j.fetchall("SELECT seq FROM messages WHERE text ILIKE ? ORDER BY seq", (f"%{text}%",))
    return [r[0] for r in rows]


async def test_message_received_inserts_message_and_opens_conversation(store: Store) -> None:
    j = await store.open()
    ev = await j.append("message.received", received("m1", "hi there", platform_id="tg-1"), "c-1")
    m = await one(j, "SELECT * FROM messages WHERE id='m1'")
    assert m["seq"] == ev.seq and m["conversation"] == "c-1" and m["direction"] == "inbound"
    assert (m["channel"], m["platform_id"], m["chat"], m["kind"], m["text"]) == ("webchat", "tg-1", "chat-1", "message", "hi there")
    assert (m["sender_channel"], m["sender_user"], m["sender_display"]) == ("webchat", "client-1", "Client One")
    assert m["ts"] == ev.ts and m["action"] is None and m["erased"] == 0 and json.loads(m["attachments_json"]) == []
    c = await one(j, "SELECT * FROM conversations WHERE id='c-1'")
    assert (c["client_channel"], c["client_user"], c["client_display"]) == ("webchat", "client-1", "Client One")
    assert (c["opened_seq"], c["last_seq"], c["first_outbound_seq"], c["employee"]) == (ev.seq, ev.seq, None, None)
    reply = await j.append("message.received", received("m2", "hello", direction="outbound", channel="webdesk", employee="alice"), "c-1")
    later = await j.append("message.received", received("m3", "more", direction="outbound", channel="webdesk", employee="alice"), "c-1")
    c = await one(j, "SELECT * FROM conversations WHERE id='c-1'")
    assert (c["opened_seq"], c["last_seq"], c["first_outbound_seq"], c["employee"]) == (ev.seq, later.seq, reply.seq, "alice")
    m2 = await one(j, "SELECT * FROM messages WHERE id='m2'")
    assert (m2["direction"], m2["sender_user"], m2["employee"]) == ("outbound", "alice", "alice")


async def test_edit_gets_its_own_row_and_keeps_the_edited_one(store: Store) -> None:
    j = await store.open()
    await j.append("message.received", received("m1", "original words"), "c-1")
    await j.append("message.received", received("m2", "edited words", kind="edit", edits="m1"), "c-1")
    got = [dict(r) for r in await j.fetchall("SELECT id, kind, text, edits FROM messages ORDER BY seq")]
    assert got == [
        {"id": "m1", "kind": "message", "text": "original words", "edits": None},
        {"id": "m2", "kind": "edit", "text": "edited words", "edits": "m1"},
    ]


async def test_duplicate_message_does_not_break_the_journal(store: Store) -> None:
    j = await store.open()
    await j.append("message.received", received("m1", "once", platform_id="p"), "c-1")
    dup = await j.append("message.received", received("m9", "again", platform_id="p"), "c-1")
    assert dup.seq == 2
    assert [r[0] for r in await j.fetchall("SELECT id FROM messages")] == ["m1"]
    assert (await j.verify()).ok


async def test_missing_optional_fields_are_tolerated(store: Store) -> None:
    j = await store.open()
    await j.append("message.received", {"id": "bare"}, None)
    await j.append("message.received", {"text": "no id at all", "sender": "not-a-dict"}, "c-2")
    await j.append("policy.verdict", {"message_id": "bare"})
    await j.append("delivery.queued", {"delivery_id": "d0"})
    await j.append("delivery.failed", {"delivery_id": "d0"})
    await j.append("review.decided", {})
    await j.append("conversation.assigned", {"employee": "bob"})
    await j.append("retention.erased", {"seqs": ["x", 1]})
    ids = sorted(r[0] for r in await j.fetchall("SELECT id FROM messages"))
    assert ids == ["bare", "seq-2"]
    assert (await one(j, "SELECT attempts, state FROM deliveries"))["attempts"] == 1
    assert j.stats.projection_errors == 0


async def test_policy_verdict_and_review_queue(store: Store) -> None:
    j = await store.open()
    await j.append("message.received", received("m1", "card 4111 1111 1111 1111"), "c-1")
    await j.append("message.received", received("m2", "insider tip"), "c-1")
    await j.append("policy.verdict", verdict("m1", "redact", rules=["PII-001"]), "c-1")
    v2 = await j.append("policy.verdict", verdict("m2", "quarantine", review=True, rules=["MNPI-1"]), None)
    await j.append("policy.verdict", dict(verdict("m1", "block"), shadow=True), "c-1")
    m1 = await one(j, "SELECT action, rules_json FROM messages WHERE id='m1'")
    assert m1["action"] == "redact" and json.loads(m1["rules_json"])[0]["rule"] == "PII-001"
    q = await j.fetchall("SELECT * FROM review_queue")
    assert len(q) == 1
    assert (q[0]["message_id"], q[0]["seq"], q[0]["conversation"], q[0]["action"], q[0]["state"]) == ("m2", v2.seq, "c-1", "quarantine", "open")
    d = await j.append("review.decided", {"message_id": "m2", "decision": "release", "reviewer": "carol", "reason": "ok"}, "c-1")
    r = await one(j, "SELECT * FROM review_queue WHERE message_id='m2'")
    assert (r["state"], r["decision"], r["decided_by"], r["reason"], r["decided_seq"]) == ("decided", "release", "carol", "ok", d.seq)


async def test_deliveries_follow_queued_failed_delivered(store: Store) -> None:
    j = await store.open()
    q = await j.append("delivery.queued", queued("d1", "m1"), "c-1")
    await j.append("delivery.queued", queued("d2", "m1", channel="telegram-staff"), "c-1")
    row = await one(j, "SELECT * FROM deliveries WHERE delivery_id='d1'")
    assert (row["seq"], row["message_id"], row["conversation"], row["channel"], row["state"], row["attempts"]) == (q.seq, "m1", "c-1", "webdesk", "queued", 0)
    assert json.loads(row["to_json"])["user"] == "alice" and json.loads(row["out_json"])["text"] == "hello"
    await j.append("delivery.failed", {"delivery_id": "d1", "message_id": "m1", "channel": "webdesk", "reason": "429", "permanent": False, "attempt": 1}, "c-1")
    row = await one(j, "SELECT state, attempts, reason FROM deliveries WHERE delivery_id='d1'")
    assert (row["state"], row["attempts"], row["reason"]) == ("queued", 1, "429")
    await j.append("message.delivered", {"delivery_id": "d1", "message_id": "m1", "channel": "webdesk", "platform_id": "w-7", "attempt": 2}, "c-1")
    await j.append("delivery.failed", {"delivery_id": "d2", "message_id": "m1", "channel": "telegram-staff", "reason": "chat not found", "permanent": True, "attempt": 1}, "c-1")
    got = {r["delivery_id"]: dict(r) for r in await j.fetchall("SELECT delivery_id, state, attempts, platform_id, reason FROM deliveries")}
    assert got["d1"] == {"delivery_id": "d1", "state": "delivered", "attempts": 2, "platform_id": "w-7", "reason": "429"}
    assert got["d2"] == {"delivery_id": "d2", "state": "failed", "attempts": 1, "platform_id": None, "reason": "chat not found"}


async def test_conversation_assigned_sets_and_hands_over(store: Store) -> None:
    j = await store.open()
    first = await j.append("conversation.assigned", {"conversation": "c-5", "employee": "alice", "previous": None, "actor": "router", "reason": "desk", "client": party("webchat", "u5", "Una")})
    c = await one(j, "SELECT * FROM conversations WHERE id='c-5'")
    assert (c["employee"], c["client_user"], c["client_display"], c["opened_seq"]) == ("alice", "u5", "Una", first.seq)
    await j.append("conversation.assigned", {"conversation": "c-5", "employee": "bob", "previous": "alice", "actor": "admin", "reason": "handover", "client": party("webchat", "u5", "Una")})
    assert (await one(j, "SELECT employee FROM conversations WHERE id='c-5'"))["employee"] == "bob"
    await j.append("message.received", received("m1", "still there?"), "c-5")
    c = await one(j, "SELECT employee, opened_seq FROM conversations WHERE id='c-5'")
    assert c == {"employee": "bob", "opened_seq": first.seq}


async def test_search_chinese_japanese_and_latin(tmp_path: Path, jopen: Any) -> None:
    j = await jopen(tmp_path)
    texts = {
        "zh": "我想查询一下我的账户余额，谢谢",
        "ja": "口座の残高を確認したいのですが、よろしくお願いします",
        "en": "Please transfer the Funds before Friday",
        "zh2": "今天天气很好",
    }
    for mid, text in texts.items():
        await j.append("message.received", received(mid, text), "c-1")

    async def search(q: str) -> list[str]:
        rows = await j.fetchall(
            "SELECT m.id FROM messages_fts JOIN messages m ON m.rowid = messages_fts.rowid WHERE messages_fts MATCH ? ORDER BY m.seq",
            ('"' + q + '"',),
        )
        return [r[0] for r in rows]

    assert await search("账户余额") == ["zh"]
    assert await search("残高を確認") == ["ja"]
    assert await search("お願い") == ["ja"]
    assert await search("funds before") == ["en"]  # trigram is case-insensitive for ASCII
    assert await search("天气很") == ["zh2"]
    assert await search("余额不足") == []


async def test_retention_erased_clears_text_and_index(store: Store) -> None:
    j = await store.open()
    a = await j.append("message.received", received("m1", "my passport number is X123"), "c-1")
    await j.append("message.received", received("m2", "passport renewal"), "c-1")
    await j.append("retention.erased", {"seqs": [a.seq], "blobs": [], "reason": "gdpr", "actor": "dpo"})
    m = await one(j, "SELECT erased, text FROM messages WHERE id='m1'")
    assert m == {"erased": 1, "text": ""}
    assert await indexed(store, j, "passport") == [2]


async def test_rebuild_equals_incremental(store: Store) -> None:
    j = await store.open()
    await j.append("conversation.assigned", {"conversation": "c-1", "employee": "alice", "client": party("webchat", "client-1")})
    for i in range(30):
        await j.append("message.received", received(f"m{i}", f"message {i} 你好世界 {i}", direction="inbound" if i % 3 else "outbound", employee="alice"), f"c-{i % 4}")
        await j.append("policy.verdict", verdict(f"m{i}", "quarantine" if i % 5 == 0 else "allow", review=i % 5 == 0, rules=["R1"]), f"c-{i % 4}")
        await j.append("delivery.queued", queued(f"d{i}", f"m{i}"), f"c-{i % 4}")
        if i % 2:
            await j.append("message.delivered", {"delivery_id": f"d{i}", "platform_id": f"x{i}"}, f"c-{i % 4}")
        elif i % 4 == 0:
            await j.append("delivery.failed", {"delivery_id": f"d{i}", "reason": "boom", "permanent": i % 8 == 0}, f"c-{i % 4}")
    await j.append("review.decided", {"message_id": "m5", "decision": "reject", "reviewer": "carol", "reason": "mnpi"})
    await j.append("retention.erased", {"seqs": [2, 6], "blobs": []})
    await j.append("message.received", received("m-edit", "fixed", kind="edit", edits="m1"), "c-1")

    tables = {
        "messages": "SELECT * FROM messages ORDER BY id",
        "conversations": "SELECT * FROM conversations ORDER BY id",
        "deliveries": "SELECT * FROM deliveries ORDER BY delivery_id",
        "review_queue": "SELECT * FROM review_queue ORDER BY message_id",
    }
    if store.backend == "sqlite":
        tables["messages_fts"] = "SELECT rowid, text FROM messages_fts ORDER BY rowid"

    async def snapshot() -> dict[str, list[tuple[Any, ...]]]:
        return {name: [tuple(r) for r in await j.fetchall(sql)] for name, sql in tables.items()}

    before = await snapshot()
    assert all(before.values())
    await j.fetchall("SELECT 1")
    count = await j.rebuild()
    assert count == (await j.fetchall("SELECT count(*) FROM events"))[0][0]
    assert await snapshot() == before
    assert len(await indexed(store, j, "你好世界")) == 28


async def test_unprojectable_body_is_skipped_alone_and_the_event_kept(store: Store) -> None:
    j = await store.open()
    bad = received("m-bad", "odd one")
    bad["channel"] = {"not": "a name"}
    evs = await j.append_many([
        ("message.received", received("m1", "first one"), "c-1"),
        ("message.received", bad, "c-1"),
        ("message.received", received("m2", "second one"), "c-1"),
    ])
    assert [e.seq for e in evs] == [1, 2, 3]
    assert j.stats.projection_errors == 1
    assert [r[0] for r in await j.fetchall("SELECT id FROM messages ORDER BY seq")] == ["m1", "m2"]
    assert await indexed(store, j, "one") == [1, 3]
    c = await one(j, "SELECT opened_seq, last_seq FROM conversations WHERE id='c-1'")
    assert c == {"opened_seq": 1, "last_seq": 3}
    assert (await j.verify()).ok
    assert await j.rebuild() == 3
    assert [r[0] for r in await j.fetchall("SELECT id FROM messages ORDER BY seq")] == ["m1", "m2"]


async def test_duplicate_in_one_batch_is_indexed_once(store: Store) -> None:
    j = await store.open()
    await j.append_many([
        ("message.received", received("m1", "same words here", platform_id="p1"), "c-1"),
        ("message.received", received("m1-again", "same words here", platform_id="p1"), "c-1"),
        ("message.received", received("m3", "other words", platform_id="p3"), "c-1"),
    ])
    assert [r[0] for r in await j.fetchall("SELECT id FROM messages ORDER BY seq")] == ["m1", "m3"]
    assert await indexed(store, j, "words") == [1, 3]


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    body=st.dictionaries(st.sampled_from(["to", "out", "rules", "attachments"]) | st.text(), _json_values, max_size=5),
    field=st.sampled_from(["to", "out", "rules", "attachments"]),
)
def test_field_json_in_sql_equals_encoding_the_field_again(body: dict[str, Any], field: str) -> None:
    """The projections cut JSON fields out of the stored body text; that must give what
    `_json(body.get(field))` gives (the stored tables and rebuild depend on it)."""
    db = sqlite3.connect(":memory:")
    sql = "SELECT " + projections.FIELD_JSON.format(body="?", field=field)
    got = db.execute(sql, (canonical_json(body),)).fetchone()[0]
    db.close()
    assert got == projections._json(body.get(field))


async def test_delivery_fields_too_deep_for_sqlite_json_are_still_projected(store: Store) -> None:
    """SQLite's JSON parser stops at 2000 levels; with a raised recursion limit Python encodes deeper."""
    deep: Any = "leaf"
    for _ in range(2500):
        deep = [deep]
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(20000)
    try:
        j = await store.open()
        await j.append("delivery.queued", queued("d-deep", "m-1") | {"to": deep}, "c-1")
        await j.append("delivery.queued", queued("d-flat", "m-1"), "c-1")
        rows = {r["delivery_id"]: r["to_json"] for r in await j.fetchall("SELECT delivery_id, to_json FROM deliveries")}
        assert rows["d-deep"] == canonical_json(deep)
        assert rows["d-flat"] == canonical_json(queued("d-flat", "m-1")["to"])
        assert j.stats.projection_errors == 0
        await j.rebuild()
        again = {r["delivery_id"]: r["to_json"] for r in await j.fetchall("SELECT delivery_id, to_json FROM deliveries")}
        assert again == rows
        await j.close()
    finally:
        sys.setrecursionlimit(limit)

"""Derived tables kept in step with the events: one function per kind, applied in the event's transaction.

Projections never hold the only copy of anything; `rebuild` drops them and replays the events.
Each function takes a run of consecutive events of its kind and applies them with executemany,
phase by phase; every function is written so that this gives the same tables as applying the
events one at a time (later statements of a run never read what earlier phases of a later
event wrote). Missing optional fields are tolerated; a body that cannot be projected at all is
skipped (counted and logged), never the event.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from relay.journal.chain import Event, canonical_json
from relay.journal.schema import PROJECTIONS, PROJECTIONS_VERSION, drop_projections, mark_projections, projections_current

log = logging.getLogger("relay.journal")

Record = tuple[int, float, str, "str | None", dict[str, Any], str, str, str]
"""An event as the projections take it: (seq, ts, kind, conversation, body, body_json, prev_hash,
hash). A plain tuple: the writer builds one per event, and an `Event` costs far more. `body_json`
is the stored canonical text: a field stored as JSON is cut from it by SQLite (`body_json -> '$.f'`
gives the field's canonical JSON verbatim, tests/test_journal_projections.py checks) instead of
being encoded again."""
Projection = Callable[[sqlite3.Connection, Sequence[Record]], None]
DATA_ERRORS = (sqlite3.IntegrityError, sqlite3.InterfaceError, sqlite3.ProgrammingError, ValueError, TypeError, AttributeError)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _json(value: Any) -> str | None:
    if value is None:
        return None
    if not value and isinstance(value, (list, tuple)):
        return "[]"
    return canonical_json(value)


FIELD_JSON = "NULLIF({body} -> '$.{field}', 'null')"
"""SQL for `_json(body.get(field))` from the body's canonical JSON (NULL when absent or null)."""


def _client(body: dict[str, Any]) -> dict[str, Any]:
    client = _dict(body.get("client"))
    if not client and body.get("direction") == "inbound":
        client = _dict(body.get("sender"))
    return client


_INSERT_MESSAGE = (
    "INSERT OR IGNORE INTO messages(rowid, id, seq, conversation, direction, channel, platform_id, chat,"
    " sender_channel, sender_user, sender_display, kind, text, edits, reply_to, attachments_json,"
    " ts, employee) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
_INDEX_MESSAGE = "INSERT INTO messages_fts(rowid, text) VALUES(?, ?)"
_UPSERT_CONVERSATION = (
    "INSERT INTO conversations(id, client_channel, client_user, client_display, employee,"
    " opened_seq, last_seq, first_outbound_seq) VALUES(?,?,?,?,?,?,?,?)"
    " ON CONFLICT(id) DO UPDATE SET last_seq=excluded.last_seq,"
    " first_outbound_seq=COALESCE(conversations.first_outbound_seq, excluded.first_outbound_seq),"
    " client_channel=COALESCE(conversations.client_channel, excluded.client_channel),"
    " client_user=COALESCE(conversations.client_user, excluded.client_user),"
    " client_display=COALESCE(conversations.client_display, excluded.client_display),"
    " employee=COALESCE(conversations.employee, excluded.employee)"
)


def index_text(text: str) -> str:
    """What the search index holds: FTS5 (and SQLite's LIKE) stop reading text at a NUL, so the
    index gets a space there; `messages.text` and the event keep the exact text."""
    return text.replace("\x00", " ") if isinstance(text, str) and "\x00" in text else text


def message_received(db: sqlite3.Connection, evs: Sequence[Record]) -> None:
    """A row per message (rowid = seq; edits and deletes get their own row, the edited one stays),
    its text in the search index, and the conversation opened or touched."""
    messages: list[tuple[Any, ...]] = []
    indexed: list[tuple[int, str]] = []
    conversations: list[tuple[Any, ...]] = []
    for seq, ts, _, conversation, body, _, _, _ in evs:
        sender = _dict(body.get("sender"))
        text = body.get("text") or ""
        direction = body.get("direction")
        messages.append((
            seq, body.get("id") or f"seq-{seq}", seq, conversation, direction,
            body.get("channel"), body.get("platform_id") or None, body.get("chat"),
            sender.get("channel"), sender.get("user"), sender.get("display"),
            body.get("kind") or "message", text, body.get("edits"), body.get("reply_to"),
            _json(body.get("attachments") or []), ts, body.get("employee"),
        ))
        if text:
            indexed.append((seq, index_text(text)))
        if conversation is not None:
            client = _client(body)
            conversations.append((
                conversation, client.get("channel"), client.get("user"), client.get("display"),
                body.get("employee"), seq, seq, seq if direction == "outbound" else None,
            ))
    before = db.total_changes
    db.executemany(_INSERT_MESSAGE, messages)
    if db.total_changes - before != len(messages):  # a duplicate was ignored: index only new rows
        indexed = [(seq, text) for seq, text in indexed if db.execute("SELECT 1 FROM messages WHERE rowid=?", (seq,)).fetchone()]
    if indexed:
        db.executemany(_INDEX_MESSAGE, indexed)
    if conversations:
        db.executemany(_UPSERT_CONVERSATION, conversations)


def policy_verdict(db: sqlite3.Connection, evs: Sequence[Record]) -> None:
    """Stamps the message with its verdict; a verdict marked for review opens a queue entry.
    Shadow verdicts (a candidate policy run beside the live one) change nothing here."""
    stamps: list[tuple[Any, ...]] = []
    reviews: list[tuple[Any, ...]] = []
    for seq, _, _, conversation, body, _, _, _ in evs:
        if body.get("shadow"):
            continue
        mid = body.get("message_id")
        rules = _json(body.get("rules") or [])
        stamps.append((body.get("action"), rules, seq, mid))
        if body.get("review"):
            reviews.append((mid, seq, conversation, mid, body.get("action"), rules))
    db.executemany("UPDATE messages SET action=?, rules_json=?, verdict_seq=? WHERE id=?", stamps)
    if reviews:
        db.executemany(
            "INSERT OR REPLACE INTO review_queue(message_id, seq, conversation, action, rules_json, state)"
            " VALUES(?, ?, COALESCE(?, (SELECT conversation FROM messages WHERE id=?)), ?, ?, 'open')",
            reviews,
        )


_INSERT_DELIVERY = (
    "INSERT OR IGNORE INTO deliveries(delivery_id, seq, message_id, conversation, channel, to_json,"
    " out_json, state, attempts) VALUES(?1,?2,?3,?4,?5,{to},{out},'queued',0)"
)


def delivery_queued(db: sqlite3.Connection, evs: Sequence[Record]) -> None:
    try:
        db.executemany(
            _INSERT_DELIVERY.format(
                to=FIELD_JSON.format(body="?6", field="to"), out=FIELD_JSON.format(body="?6", field="out")
            ),
            [
                (b.get("delivery_id"), seq, b.get("message_id"), conversation, b.get("channel"), body_json)
                for seq, _, _, conversation, b, body_json, _, _ in evs
            ],
        )
    except sqlite3.OperationalError:  # nested deeper than SQLite's JSON parser goes: encode here
        db.executemany(
            _INSERT_DELIVERY.format(to="?6", out="?7"),
            [
                (b.get("delivery_id"), seq, b.get("message_id"), conversation, b.get("channel"),
                 _json(b.get("to")), _json(b.get("out")))
                for seq, _, _, conversation, b, _, _, _ in evs
            ],
        )


def message_delivered(db: sqlite3.Connection, evs: Sequence[Record]) -> None:
    db.executemany(
        "UPDATE deliveries SET state='delivered', platform_id=?, attempts=attempts+1 WHERE delivery_id=?",
        [(ev[4].get("platform_id"), ev[4].get("delivery_id")) for ev in evs],
    )


def delivery_failed(db: sqlite3.Connection, evs: Sequence[Record]) -> None:
    """Every attempt counts; only a permanent failure ends the delivery."""
    db.executemany(
        "UPDATE deliveries SET state=CASE WHEN ? THEN 'failed' ELSE state END, reason=?, attempts=attempts+1"
        " WHERE delivery_id=?",
        [(bool(b.get("permanent")), b.get("reason"), b.get("delivery_id")) for _, _, _, _, b, _, _, _ in evs],
    )


def review_decided(db: sqlite3.Connection, evs: Sequence[Record]) -> None:
    """An annotation leaves the item as it was; an escalation keeps it open for supervisors.
    Every decision (annotations too) is listed under its message, so an item's history is read by index,
    and counted per reviewer in `reviewer_decisions`, for the dashboard."""
    db.executemany("INSERT OR IGNORE INTO review_decisions(seq, message_id) VALUES(?, ?)",
                   [(ev[0], ev[4].get("message_id")) for ev in evs])
    db.executemany(
        "UPDATE review_queue SET state=?, decided_by=?, decision=?, reason=?, decided_seq=?"
        " WHERE message_id=?",
        [
            ("escalated" if b.get("decision") == "escalate" else "decided", b.get("reviewer"), b.get("decision"),
             b.get("reason"), seq, b.get("message_id"))
            for seq, _, _, _, b, _, _, _ in evs
            if b.get("decision") != "annotate"
        ],
    )
    db.executemany(
        "INSERT INTO reviewer_decisions(reviewer, decision, n) VALUES(?, ?, 1)"
        " ON CONFLICT(reviewer, decision) DO UPDATE SET n = n + 1",
        [(str(b.get("reviewer") or ""), str(b.get("decision") or "")) for _, _, _, _, b, _, _, _ in evs],
    )


def conversation_assigned(db: sqlite3.Connection, evs: Sequence[Record]) -> None:
    rows: list[tuple[Any, ...]] = []
    for seq, _, _, ev_conversation, body, _, _, _ in evs:
        conversation = body.get("conversation") or ev_conversation
        if conversation is None:
            continue
        client = _dict(body.get("client"))
        rows.append((conversation, client.get("channel"), client.get("user"), client.get("display"),
                     body.get("employee"), seq, seq))
    db.executemany(
        "INSERT INTO conversations(id, client_channel, client_user, client_display, employee,"
        " opened_seq, last_seq) VALUES(?,?,?,?,?,?,?)"
        " ON CONFLICT(id) DO UPDATE SET employee=excluded.employee,"
        " client_channel=COALESCE(conversations.client_channel, excluded.client_channel),"
        " client_user=COALESCE(conversations.client_user, excluded.client_user),"
        " client_display=COALESCE(conversations.client_display, excluded.client_display)",
        rows,
    )


def client_displays(events: Iterable[tuple[str, "str | None", dict[str, Any]]],
                    conversations: set[str]) -> dict[str, "str | None"]:
    """The `conversations.client_display` replaying `(kind, conversation, body)` in seq order gives
    these conversations: the first display a message or an assignment names (COALESCE above).
    Erasure sets it from the bodies as they are after the tombstones."""
    out: dict[str, str | None] = dict.fromkeys(conversations)
    found: set[str] = set()
    for kind, conversation, body in events:
        if kind == "message.received":
            conv, display = conversation, _client(body).get("display")
        elif kind == "conversation.assigned":
            conv, display = body.get("conversation") or conversation, _dict(body.get("client")).get("display")
        else:
            continue
        if conv in out and conv not in found and display is not None:
            out[conv] = display
            found.add(conv)
    return out


def retention_erased(db: sqlite3.Connection, evs: Sequence[Record]) -> None:
    """Erased messages keep their row (and digests) but lose their text, also from the index, and
    the sender's display name (the tombstones that follow leave it out too)."""
    seqs = [(s,) for ev in evs for s in ev[4].get("seqs") or () if type(s) is int]
    db.executemany("UPDATE messages SET erased=1, text='', sender_display=NULL WHERE rowid=?", seqs)
    db.executemany("DELETE FROM messages_fts WHERE rowid=?", seqs)


def policy_loaded(db: sqlite3.Connection, evs: Sequence[Record]) -> None:
    """Which policy set (live or shadow) was loaded when: start-up reads the newest by index."""
    db.executemany("INSERT OR IGNORE INTO policy_loads(seq, version, shadow) VALUES(?, ?, ?)",
                   [(ev[0], ev[4].get("version"), 1 if ev[4].get("shadow") else 0) for ev in evs])


BY_KIND: dict[str, Projection] = {
    "message.received": message_received,
    "policy.verdict": policy_verdict,
    "delivery.queued": delivery_queued,
    "message.delivered": message_delivered,
    "delivery.failed": delivery_failed,
    "review.decided": review_decided,
    "conversation.assigned": conversation_assigned,
    "retention.erased": retention_erased,
    "policy.loaded": policy_loaded,
}


def apply_events(db: sqlite3.Connection, events: Sequence[Record]) -> int:
    """Project events in order (kinds without a projection, e.g. checkpoint, are no-ops).

    Returns how many events could not be projected. If any run fails, all of this call's
    projection work is undone and redone one event at a time, so only the bad events are skipped.
    """
    db.execute("SAVEPOINT projections")
    try:
        _apply_runs(db, events)
    except DATA_ERRORS:
        db.execute("ROLLBACK TO projections")
    else:
        db.execute("RELEASE projections")
        return 0
    errors = 0
    for ev in events:
        fn = BY_KIND.get(ev[2])
        if fn is None:
            continue
        db.execute("SAVEPOINT projection_one")
        try:
            fn(db, [ev])
        except DATA_ERRORS as exc:
            db.execute("ROLLBACK TO projection_one")
            errors += 1
            log.warning("projection of seq %d (%s) failed: %s", ev[0], ev[2], type(exc).__name__)
        db.execute("RELEASE projection_one")
    db.execute("RELEASE projections")
    return errors


def _apply_runs(db: sqlite3.Connection, events: Sequence[Record]) -> None:
    i, n = 0, len(events)
    while i < n:
        kind = events[i][2]
        j = i + 1
        while j < n and events[j][2] == kind:
            j += 1
        fn = BY_KIND.get(kind)
        if fn is not None:
            fn(db, events[i:j])
        i = j


def rows_to_events(rows: Iterable[tuple[Any, ...]]) -> Iterable[Event]:
    for seq, ts, kind, conversation, body_json, prev_hash, hash_ in rows:
        body = json.loads(body_json)
        yield Event(seq, ts, kind, conversation, body if isinstance(body, dict) else {}, prev_hash, hash_)


def rows_to_records(rows: Iterable[tuple[Any, ...]]) -> list[Record]:
    """Stored events as the projections take them (rebuild: no `Event`s needed)."""
    records: list[Record] = []
    for seq, ts, kind, conversation, body_json, prev_hash, hash_ in rows:
        body = json.loads(body_json)
        body = body if isinstance(body, dict) else {}
        records.append((seq, ts, kind, conversation, body, body_json, prev_hash, hash_))
    return records


def rebuild(db: sqlite3.Connection, chunk: int = 2000) -> int:
    """Drop every projection and replay all events (inside the caller's transaction)."""
    drop_projections(db)
    for statement in PROJECTIONS.split(";"):
        if statement.strip():
            db.execute(statement)
    cur = db.cursor()
    cur.execute("SELECT seq, ts, kind, conversation, body_json, prev_hash, hash FROM events ORDER BY seq")
    count = 0
    while rows := cur.fetchmany(chunk):
        events = rows_to_records(rows)
        apply_events(db, events)
        count += len(events)
    mark_projections(db)
    if count:
        log.info("journal projections rebuilt (version %s, %d events)", PROJECTIONS_VERSION, count)
    return count


def upgrade(db: sqlite3.Connection) -> int | None:
    """Bring the projections to this code's version (`schema.PROJECTIONS_VERSION`) when the writer
    opens a journal: a journal written by an older relay has them rebuilt from its events, in one
    transaction. Returns how many events were replayed, or None when nothing was needed."""
    if projections_current(db):
        db.executescript(PROJECTIONS)
        return None
    db.execute("BEGIN IMMEDIATE")
    try:
        count = rebuild(db)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return count

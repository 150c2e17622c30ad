"""Derived tables kept in step with the events: one function per kind, applied in the event's transaction.

Projections never hold the only copy of anything; `rebuild` drops them and replays the events,
so each function must be deterministic and tolerant of missing optional fields.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable
from typing import Any

from relay.journal.chain import Event, canonical_json
from relay.journal.schema import PROJECTIONS, drop_projections

Projection = Callable[[sqlite3.Connection, Event], None]


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _json(value: Any) -> str | None:
    return None if value is None else canonical_json(value)


def _client(body: dict[str, Any]) -> dict[str, Any]:
    client = _dict(body.get("client"))
    if not client and body.get("direction") == "inbound":
        client = _dict(body.get("sender"))
    return client


_INSERT_MESSAGE = (
    "INSERT OR IGNORE INTO messages(id, seq, conversation, direction, channel, platform_id, chat,"
    " sender_channel, sender_user, sender_display, kind, text, edits, reply_to, attachments_json,"
    " ts, employee) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
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


def message_received(db: sqlite3.Connection, ev: Event) -> None:
    """A row per message (edits and deletes get their own row; the edited one stays)."""
    body = ev.body
    sender = _dict(body.get("sender"))
    text = body.get("text") or ""
    message_id = body.get("id") or f"seq-{ev.seq}"
    cur = db.execute(
        _INSERT_MESSAGE,
        (
            message_id,
            ev.seq,
            ev.conversation,
            body.get("direction"),
            body.get("channel"),
            body.get("platform_id") or None,
            body.get("chat"),
            sender.get("channel"),
            sender.get("user"),
            sender.get("display"),
            body.get("kind") or "message",
            text,
            body.get("edits"),
            body.get("reply_to"),
            _json(body.get("attachments") or []),
            ev.ts,
            body.get("employee"),
        ),
    )
    if cur.rowcount and text:
        db.execute("INSERT INTO messages_fts(rowid, text) VALUES(?, ?)", (ev.seq, text))
    if ev.conversation is None:
        return
    client = _client(body)
    db.execute(
        _UPSERT_CONVERSATION,
        (
            ev.conversation,
            client.get("channel"),
            client.get("user"),
            client.get("display"),
            body.get("employee"),
            ev.seq,
            ev.seq,
            ev.seq if body.get("direction") == "outbound" else None,
        ),
    )


def policy_verdict(db: sqlite3.Connection, ev: Event) -> None:
    """Stamps the message with its verdict; a verdict marked for review opens a queue entry."""
    body = ev.body
    if body.get("shadow"):
        return
    message_id = body.get("message_id")
    rules = _json(body.get("rules") or [])
    db.execute(
        "UPDATE messages SET action=?, rules_json=? WHERE id=?", (body.get("action"), rules, message_id)
    )
    if body.get("review"):
        db.execute(
            "INSERT OR REPLACE INTO review_queue(message_id, seq, conversation, action, rules_json, state)"
            " VALUES(?, ?, COALESCE(?, (SELECT conversation FROM messages WHERE id=?)), ?, ?, 'open')",
            (message_id, ev.seq, ev.conversation, message_id, body.get("action"), rules),
        )


def delivery_queued(db: sqlite3.Connection, ev: Event) -> None:
    body = ev.body
    db.execute(
        "INSERT OR IGNORE INTO deliveries(delivery_id, seq, message_id, conversation, channel, to_json,"
        " out_json, state, attempts) VALUES(?,?,?,?,?,?,?,'queued',0)",
        (
            body.get("delivery_id"),
            ev.seq,
            body.get("message_id"),
            ev.conversation,
            body.get("channel"),
            _json(body.get("to")),
            _json(body.get("out")),
        ),
    )


def message_delivered(db: sqlite3.Connection, ev: Event) -> None:
    body = ev.body
    db.execute(
        "UPDATE deliveries SET state='delivered', platform_id=?, attempts=attempts+1 WHERE delivery_id=?",
        (body.get("platform_id"), body.get("delivery_id")),
    )


def delivery_failed(db: sqlite3.Connection, ev: Event) -> None:
    """Every attempt counts; only a permanent failure ends the delivery."""
    body = ev.body
    if body.get("permanent"):
        sql = "UPDATE deliveries SET state='failed', reason=?, attempts=attempts+1 WHERE delivery_id=?"
    else:
        sql = "UPDATE deliveries SET reason=?, attempts=attempts+1 WHERE delivery_id=?"
    db.execute(sql, (body.get("reason"), body.get("delivery_id")))


def review_decided(db: sqlite3.Connection, ev: Event) -> None:
    """An annotation leaves the item as it was; an escalation keeps it open for supervisors."""
    body = ev.body
    decision = body.get("decision")
    if decision == "annotate":
        return
    db.execute(
        "UPDATE review_queue SET state=?, decided_by=?, decision=?, reason=?, decided_seq=?"
        " WHERE message_id=?",
        ("escalated" if decision == "escalate" else "decided", body.get("reviewer"), decision, body.get("reason"),
         ev.seq, body.get("message_id")),
    )


def conversation_assigned(db: sqlite3.Connection, ev: Event) -> None:
    body = ev.body
    conversation = body.get("conversation") or ev.conversation
    if conversation is None:
        return
    client = _dict(body.get("client"))
    db.execute(
        "INSERT INTO conversations(id, client_channel, client_user, client_display, employee,"
        " opened_seq, last_seq) VALUES(?,?,?,?,?,?,?)"
        " ON CONFLICT(id) DO UPDATE SET employee=excluded.employee,"
        " client_channel=COALESCE(conversations.client_channel, excluded.client_channel),"
        " client_user=COALESCE(conversations.client_user, excluded.client_user),"
        " client_display=COALESCE(conversations.client_display, excluded.client_display)",
        (
            conversation,
            client.get("channel"),
            client.get("user"),
            client.get("display"),
            body.get("employee"),
            ev.seq,
            ev.seq,
        ),
    )


def retention_erased(db: sqlite3.Connection, ev: Event) -> None:
    """Erased messages keep their row (and digests) but lose their text, also from the index."""
    seqs = [(int(s),) for s in ev.body.get("seqs") or [] if isinstance(s, int)]
    db.executemany("UPDATE messages SET erased=1, text='' WHERE seq=?", seqs)
    db.executemany("DELETE FROM messages_fts WHERE rowid=?", seqs)


PROJECTIONS_BY_KIND: dict[str, Projection] = {
    "message.received": message_received,
    "policy.verdict": policy_verdict,
    "delivery.queued": delivery_queued,
    "message.delivered": message_delivered,
    "delivery.failed": delivery_failed,
    "review.decided": review_decided,
    "conversation.assigned": conversation_assigned,
    "retention.erased": retention_erased,
}


def apply(db: sqlite3.Connection, ev: Event) -> None:
    """Project one event (kinds without a projection, e.g. checkpoint, are no-ops)."""
    fn = PROJECTIONS_BY_KIND.get(ev.kind)
    if fn is not None:
        fn(db, ev)


def rows_to_events(rows: Iterable[tuple[Any, ...]]) -> Iterable[Event]:
    for seq, ts, kind, conversation, body_json, prev_hash, hash_ in rows:
        body = json.loads(body_json)
        yield Event(seq, ts, kind, conversation, body if isinstance(body, dict) else {}, prev_hash, hash_)


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
        for ev in rows_to_events(rows):
            apply(db, ev)
            count += 1
    return count

"""The projections of relay/journal/projections.py in PostgreSQL's dialect, applied by the writer
inside the transaction that holds the events (and the chain-head lock, so in seq order).

Same tables, same meaning; differences: no `rowid` (`messages.seq` is unique and plays its
part) and no separate FTS table (a `pg_trgm` GIN index on `messages.text` serves substring
search, Chinese and Japanese included). JSON fields are encoded here (canonical JSON), since
`body_json` is kept as text, never as `jsonb` which would reorder it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import asyncpg

from relay.journal.projections import Record, _client, _dict, _json

log = logging.getLogger("relay.journal")

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages(
  id TEXT PRIMARY KEY, seq BIGINT UNIQUE, conversation TEXT, direction TEXT, channel TEXT,
  platform_id TEXT, chat TEXT, sender_channel TEXT, sender_user TEXT, sender_display TEXT,
  kind TEXT, text TEXT, edits TEXT, reply_to TEXT, attachments_json TEXT, ts DOUBLE PRECISION,
  action TEXT, rules_json TEXT, employee TEXT, erased INTEGER DEFAULT 0,
  UNIQUE(channel, platform_id));
CREATE INDEX IF NOT EXISTS messages_conversation ON messages(conversation, seq);
CREATE INDEX IF NOT EXISTS messages_receipts ON messages(reply_to) WHERE kind = 'event';
CREATE INDEX IF NOT EXISTS messages_text_trgm ON messages USING gin (text gin_trgm_ops);
CREATE TABLE IF NOT EXISTS conversations(
  id TEXT PRIMARY KEY, client_channel TEXT, client_user TEXT, client_display TEXT,
  employee TEXT, opened_seq BIGINT, last_seq BIGINT, first_outbound_seq BIGINT);
CREATE TABLE IF NOT EXISTS deliveries(
  delivery_id TEXT PRIMARY KEY, seq BIGINT, message_id TEXT, conversation TEXT, channel TEXT,
  to_json TEXT, out_json TEXT, state TEXT, platform_id TEXT, attempts INTEGER DEFAULT 0,
  reason TEXT);
CREATE INDEX IF NOT EXISTS deliveries_queued ON deliveries(seq) WHERE state='queued';
CREATE INDEX IF NOT EXISTS deliveries_queued_lane ON deliveries(conversation, seq) WHERE state='queued';
CREATE TABLE IF NOT EXISTS review_queue(
  message_id TEXT PRIMARY KEY, seq BIGINT, conversation TEXT, action TEXT, rules_json TEXT,
  state TEXT, decided_by TEXT, decision TEXT, reason TEXT, decided_seq BIGINT);
CREATE INDEX IF NOT EXISTS review_queue_open ON review_queue(seq) WHERE state='open';
ALTER TABLE messages ADD COLUMN IF NOT EXISTS verdict_seq BIGINT;
CREATE INDEX IF NOT EXISTS conversations_employee ON conversations(employee, opened_seq);
CREATE INDEX IF NOT EXISTS conversations_client_channel ON conversations(client_channel);
CREATE INDEX IF NOT EXISTS deliveries_platform ON deliveries(channel, platform_id);
CREATE INDEX IF NOT EXISTS deliveries_message ON deliveries(message_id, channel, seq);
CREATE INDEX IF NOT EXISTS deliveries_conversation ON deliveries(conversation, channel, seq);
CREATE INDEX IF NOT EXISTS review_queue_pending ON review_queue(seq) WHERE state!='decided';
CREATE TABLE IF NOT EXISTS review_decisions(seq BIGINT PRIMARY KEY, message_id TEXT);
CREATE INDEX IF NOT EXISTS review_decisions_message ON review_decisions(message_id, seq);
CREATE TABLE IF NOT EXISTS policy_loads(seq BIGINT PRIMARY KEY, version TEXT, shadow INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS policy_loads_latest ON policy_loads(shadow, seq);
"""

TABLES = ("messages", "conversations", "deliveries", "review_queue", "review_decisions", "policy_loads")

Projection = Callable[[asyncpg.Connection, Sequence[Record]], Awaitable[None]]
DATA_ERRORS = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError, ValueError, TypeError,
               AttributeError, OverflowError)


def _text(value: Any) -> str | None:
    """What SQLite stores in a TEXT column for a bound value: numbers as text, a dict or a list
    refused (TypeError: that event is counted as a projection error, as on SQLite)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (int, float)):
        return repr(value)
    raise TypeError(f"a {type(value).__name__} where text was expected")


_INSERT_MESSAGE = (
    "INSERT INTO messages(id, seq, conversation, direction, channel, platform_id, chat,"
    " sender_channel, sender_user, sender_display, kind, text, edits, reply_to, attachments_json,"
    " ts, employee) VALUES($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17)"
    " ON CONFLICT DO NOTHING"
)
_UPSERT_CONVERSATION = (
    "INSERT INTO conversations(id, client_channel, client_user, client_display, employee,"
    " opened_seq, last_seq, first_outbound_seq) VALUES($1,$2,$3,$4,$5,$6,$7,$8)"
    " ON CONFLICT(id) DO UPDATE SET last_seq=excluded.last_seq,"
    " first_outbound_seq=COALESCE(conversations.first_outbound_seq, excluded.first_outbound_seq),"
    " client_channel=COALESCE(conversations.client_channel, excluded.client_channel),"
    " client_user=COALESCE(conversations.client_user, excluded.client_user),"
    " client_display=COALESCE(conversations.client_display, excluded.client_display),"
    " employee=COALESCE(conversations.employee, excluded.employee)"
)


async def message_received(db: asyncpg.Connection, evs: Sequence[Record]) -> None:
    messages: list[tuple[Any, ...]] = []
    conversations: list[tuple[Any, ...]] = []
    for seq, ts, _, conversation, body, _, _, _ in evs:
        sender = _dict(body.get("sender"))
        direction = body.get("direction")
        messages.append((
            _text(body.get("id")) or f"seq-{seq}", seq, conversation, _text(direction),
            _text(body.get("channel")), _text(body.get("platform_id")) or None, _text(body.get("chat")),
            _text(sender.get("channel")), _text(sender.get("user")), _text(sender.get("display")),
            _text(body.get("kind")) or "message", _text(body.get("text")) or "", _text(body.get("edits")),
            _text(body.get("reply_to")), _json(body.get("attachments") or []), ts, _text(body.get("employee")),
        ))
        if conversation is not None:
            client = _client(body)
            conversations.append((
                conversation, _text(client.get("channel")), _text(client.get("user")),
                _text(client.get("display")), _text(body.get("employee")), seq, seq,
                seq if direction == "outbound" else None,
            ))
    await db.executemany(_INSERT_MESSAGE, messages)
    if conversations:
        await db.executemany(_UPSERT_CONVERSATION, conversations)


async def policy_verdict(db: asyncpg.Connection, evs: Sequence[Record]) -> None:
    stamps: list[tuple[Any, ...]] = []
    reviews: list[tuple[Any, ...]] = []
    for seq, _, _, conversation, body, _, _, _ in evs:
        if body.get("shadow"):
            continue
        mid = _text(body.get("message_id"))
        rules = _json(body.get("rules") or [])
        stamps.append((_text(body.get("action")), rules, seq, mid))
        if body.get("review"):
            reviews.append((mid, seq, conversation, _text(body.get("action")), rules))
    if stamps:
        await db.executemany("UPDATE messages SET action=$1, rules_json=$2, verdict_seq=$3 WHERE id=$4", stamps)
    if reviews:
        await db.executemany(
            "INSERT INTO review_queue(message_id, seq, conversation, action, rules_json, state)"
            " VALUES($1, $2, COALESCE($3, (SELECT conversation FROM messages WHERE id=$1)), $4, $5, 'open')"
            " ON CONFLICT(message_id) DO UPDATE SET seq=excluded.seq, conversation=excluded.conversation,"
            " action=excluded.action, rules_json=excluded.rules_json, state='open', decided_by=NULL,"
            " decision=NULL, reason=NULL, decided_seq=NULL",
            reviews,
        )


async def delivery_queued(db: asyncpg.Connection, evs: Sequence[Record]) -> None:
    await db.executemany(
        "INSERT INTO deliveries(delivery_id, seq, message_id, conversation, channel, to_json, out_json,"
        " state, attempts) VALUES($1,$2,$3,$4,$5,$6,$7,'queued',0) ON CONFLICT DO NOTHING",
        [
            (_text(b.get("delivery_id")), seq, _text(b.get("message_id")), conversation, _text(b.get("channel")),
             _json(b.get("to")), _json(b.get("out")))
            for seq, _, _, conversation, b, _, _, _ in evs
        ],
    )


async def message_delivered(db: asyncpg.Connection, evs: Sequence[Record]) -> None:
    await db.executemany(
        "UPDATE deliveries SET state='delivered', platform_id=$1, attempts=attempts+1 WHERE delivery_id=$2",
        [(_text(ev[4].get("platform_id")), _text(ev[4].get("delivery_id"))) for ev in evs],
    )


async def delivery_failed(db: asyncpg.Connection, evs: Sequence[Record]) -> None:
    await db.executemany(
        "UPDATE deliveries SET state=CASE WHEN $1 THEN 'failed' ELSE state END, reason=$2,"
        " attempts=attempts+1 WHERE delivery_id=$3",
        [(bool(b.get("permanent")), _text(b.get("reason")), _text(b.get("delivery_id")))
         for _, _, _, _, b, _, _, _ in evs],
    )


async def review_decided(db: asyncpg.Connection, evs: Sequence[Record]) -> None:
    await db.executemany("INSERT INTO review_decisions(seq, message_id) VALUES($1, $2) ON CONFLICT DO NOTHING",
                         [(ev[0], _text(ev[4].get("message_id"))) for ev in evs])
    rows = [
        ("escalated" if b.get("decision") == "escalate" else "decided", _text(b.get("reviewer")),
         _text(b.get("decision")), _text(b.get("reason")), seq, _text(b.get("message_id")))
        for seq, _, _, _, b, _, _, _ in evs
        if b.get("decision") != "annotate"
    ]
    if rows:
        await db.executemany(
            "UPDATE review_queue SET state=$1, decided_by=$2, decision=$3, reason=$4, decided_seq=$5"
            " WHERE message_id=$6",
            rows,
        )


async def conversation_assigned(db: asyncpg.Connection, evs: Sequence[Record]) -> None:
    rows: list[tuple[Any, ...]] = []
    for seq, _, _, ev_conversation, body, _, _, _ in evs:
        conversation = _text(body.get("conversation")) or ev_conversation
        if conversation is None:
            continue
        client = _dict(body.get("client"))
        rows.append((conversation, _text(client.get("channel")), _text(client.get("user")),
                     _text(client.get("display")), _text(body.get("employee")), seq, seq))
    if rows:
        await db.executemany(
            "INSERT INTO conversations(id, client_channel, client_user, client_display, employee,"
            " opened_seq, last_seq) VALUES($1,$2,$3,$4,$5,$6,$7)"
            " ON CONFLICT(id) DO UPDATE SET employee=excluded.employee,"
            " client_channel=COALESCE(conversations.client_channel, excluded.client_channel),"
            " client_user=COALESCE(conversations.client_user, excluded.client_user),"
            " client_display=COALESCE(conversations.client_display, excluded.client_display)",
            rows,
        )


async def retention_erased(db: asyncpg.Connection, evs: Sequence[Record]) -> None:
    seqs = [s for ev in evs for s in ev[4].get("seqs") or () if type(s) is int]
    if seqs:
        await db.execute("UPDATE messages SET erased=1, text='', sender_display=NULL WHERE seq = ANY($1::bigint[])", seqs)


async def policy_loaded(db: asyncpg.Connection, evs: Sequence[Record]) -> None:
    await db.executemany("INSERT INTO policy_loads(seq, version, shadow) VALUES($1, $2, $3) ON CONFLICT DO NOTHING",
                         [(ev[0], _text(ev[4].get("version")), 1 if ev[4].get("shadow") else 0) for ev in evs])


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


async def apply_events(db: asyncpg.Connection, events: Sequence[Record]) -> int:
    """Runs of one kind at a time, all under one savepoint; if that fails, again one event at a
    time, each under its own, so only the events that cannot be projected are skipped (counted)."""
    try:
        async with db.transaction():
            await _apply_runs(db, events)
        return 0
    except DATA_ERRORS:
        pass
    errors = 0
    for ev in events:
        fn = BY_KIND.get(ev[2])
        if fn is None:
            continue
        try:
            async with db.transaction():
                await fn(db, [ev])
        except DATA_ERRORS as exc:
            errors += 1
            log.warning("projection of seq %d (%s) failed: %r", ev[0], ev[2], exc)
    return errors


def _key(ev: Record) -> str | None:
    """The conversation an event's projection touches (None: it may touch any)."""
    if ev[2] == "conversation.assigned":
        body_conv = ev[4].get("conversation")
        return body_conv if isinstance(body_conv, str) and body_conv else ev[3]
    if ev[2] == "retention.erased":
        return None
    return ev[3]


def plan_runs(events: Sequence[Record]) -> list[list[Record]]:
    """The events in runs of one kind, each run one `executemany` (one round trip): an event joins
    the newest run of its kind unless an earlier event of its conversation, or an event that may
    touch every conversation, comes after that run. Each conversation's events keep their order,
    and projections of different conversations touch different rows, so the tables end up as
    applying the events one by one gives (tests/test_journal_projections.py, both backends)."""
    runs: list[tuple[str, list[Record]]] = []
    newest: dict[str, int] = {}
    last: dict[str | None, int] = {}
    barrier = -1
    for ev in events:
        kind = ev[2]
        if kind not in BY_KIND:
            continue
        key = _key(ev)
        floor = max(barrier, last.get(key, -1)) if key is not None else len(runs) - 1
        at = newest.get(kind, -1)
        if at < 0 or at < floor:
            runs.append((kind, []))
            at = newest[kind] = len(runs) - 1
        runs[at][1].append(ev)
        if key is None:
            barrier = at
            newest.clear()
            newest[kind] = at
        else:
            last[key] = max(last.get(key, -1), at)
    return [run for _, run in runs]


async def _apply_runs(db: asyncpg.Connection, events: Sequence[Record]) -> None:
    for run in plan_runs(events):
        await BY_KIND[run[0][2]](db, run)

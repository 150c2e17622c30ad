"""The reads on hot paths (receive, receipt, edit, reply, release, review, handover, start-up), in one place.

Each one is served by a primary key, an index or a partial index of open work, never a scan of
`events` or `deliveries` and never `json_extract` over events, so its cost stays flat as the
journal grows; tests/test_journal_lookups.py checks every plan here with EXPLAIN QUERY PLAN.
Events are reached by seq through a projection column (`messages.seq`, `messages.verdict_seq`,
`review_queue.seq`, `review_decisions.seq`).
"""

from __future__ import annotations

RECEIPT_DELIVERY = (
    "SELECT delivery_id, message_id, conversation, platform_id FROM deliveries WHERE channel = ? "
    "AND platform_id IN (?, ?) ORDER BY seq DESC LIMIT 1"
)
"""(channel, platform id, "template:" + platform id) -> the delivery a receipt or status is about."""

EARLY_RECEIPTS = (
    "SELECT id, text FROM messages WHERE kind = 'event' AND reply_to = ? AND channel = ? AND seq < ? ORDER BY seq"
)
"""(message id of a platform id, channel, seq of its message.delivered) -> the receipts that came first."""

LATEST_VERDICT = "SELECT e.body_json FROM messages m JOIN events e ON e.seq = m.verdict_seq WHERE m.id = ?"
"""message id -> its latest (live) policy.verdict body."""

RECEIVED_EVENT = (
    "SELECT e.seq, e.body_json, e.conversation FROM messages m JOIN events e ON e.seq = m.seq WHERE m.id = ?"
)
"""message id -> its message.received event."""

DELIVERY_EXISTS = "SELECT 1 FROM deliveries WHERE delivery_id = ?"

DELIVERED_PLATFORM_ID = (
    "SELECT platform_id FROM deliveries WHERE message_id = ? AND channel = ? AND state = 'delivered' "
    "ORDER BY seq LIMIT 1"
)
"""(message id, channel) -> the platform id it was delivered under (replies, edits, deletes)."""

CONVERSATION = "SELECT id, client_channel, client_user, client_display, employee FROM conversations WHERE id = ?"

CONVERSATION_HAS_OUTBOUND = (
    "SELECT 1 FROM deliveries d JOIN messages m ON m.id = d.message_id WHERE d.conversation = ? "
    "AND d.channel = ? AND m.direction = 'outbound' AND m.kind != 'event' LIMIT 1"
)

QUEUED_DELIVERIES = (
    "SELECT d.delivery_id, d.message_id, d.conversation, d.channel, d.to_json, d.out_json, d.attempts, "
    "e.ts AS queued_ts FROM deliveries d JOIN events e ON e.seq = d.seq WHERE d.state = 'queued' "
    "ORDER BY d.seq"
)
"""Start-up: every delivery not finished (the partial index holds only those)."""

LATEST_POLICY_LOADED = "SELECT version AS v FROM policy_loads WHERE shadow = ? ORDER BY seq DESC LIMIT 1"
"""Start-up: the version of the newest live (0) or shadow (1) policy.loaded."""

REVIEW_WHERE = {"one": "WHERE q.message_id = ?", "pending": "WHERE q.state != 'decided'", "all": ""}
"""Which review items: one by message id, those not closed by a decision (open or escalated:
what the queue and the SLA sweep show; the partial index holds only those), or every one."""

REVIEW_VERDICTS = (
    "SELECT q.message_id, e.seq, e.ts, e.conversation, e.body_json FROM review_queue q"
    " JOIN events e ON e.seq = q.seq {where} ORDER BY q.seq"
)
"""The items' verdicts (for each message the latest with review=true)."""

REVIEW_MESSAGES = (
    "SELECT q.message_id, e.seq, e.body_json FROM review_queue q JOIN messages m ON m.id = q.message_id"
    " JOIN events e ON e.seq = m.seq {where}"
)
"""The items' message.received events."""

REVIEW_DECISIONS = (
    "SELECT r.message_id, e.seq, e.ts, e.body_json FROM review_decisions r JOIN events e ON e.seq = r.seq"
    " WHERE r.message_id IN (SELECT q.message_id FROM review_queue q {where}) ORDER BY r.seq"
)
"""The items' review.decided events, oldest first (looked up by the items' ids, never a walk of
all decisions in seq order)."""

CONVERSATION_HISTORY = (
    "SELECT m.seq, m.ts, m.direction, m.kind, m.sender_user, m.sender_display, m.text, m.attachments_json,"
    " m.erased, m.action, (SELECT d.out_json FROM deliveries d WHERE d.message_id = m.id"
    "   AND COALESCE(json_extract(d.out_json, '$.kind'), '') != 'notice' ORDER BY d.seq LIMIT 1) AS out_json"
    " FROM messages m WHERE m.conversation = ? AND m.kind != 'event' AND m.channel != 'relay'"
    " ORDER BY m.seq DESC LIMIT ?"
)
"""Handover: the last messages of a conversation as they were delivered."""

HELD_NOTICE_TO = (
    "SELECT to_json FROM deliveries WHERE message_id = ? AND json_extract(out_json, '$.about') = 'held'"
    " ORDER BY seq LIMIT 1"
)
"""Release: whom the `held` notice of a message went to (nobody: a silent hold, released silently)."""

QUEUED_IN_CONVERSATION = (
    "SELECT delivery_id, message_id, to_json, out_json FROM deliveries WHERE state = 'queued'"
    " AND conversation = ? AND channel = ? ORDER BY seq"
)

COMPLIANCE_STATE_EVENTS = (
    "SELECT seq, ts, kind, conversation, body_json, prev_hash, hash FROM events"
    " WHERE kind IN ('hold.added', 'hold.released', 'erasure.requested') ORDER BY seq"
)
"""Legal holds and erasure requests (handover, review and search withhold what they cover); the
kinds are written literally, as the partial index `events_compliance_state` says them."""

EMPLOYEE_CONVERSATIONS = "SELECT id FROM conversations WHERE employee = ? ORDER BY opened_seq"

CONVERSATION_OF_EMPLOYEE = "SELECT id FROM conversations WHERE id = ? AND employee = ?"
"""Handover of one conversation: is it the employee's."""

LAST_CHECKPOINT = "SELECT MAX(seq) FROM events WHERE kind = 'checkpoint'"
"""Start-up: where the last signed checkpoint is (events since it are counted toward the next)."""

HOT_PATH: dict[str, str] = {
    "receipt delivery": RECEIPT_DELIVERY,
    "early receipts": EARLY_RECEIPTS,
    "latest verdict": LATEST_VERDICT,
    "received event": RECEIVED_EVENT,
    "delivery exists": DELIVERY_EXISTS,
    "delivered platform id": DELIVERED_PLATFORM_ID,
    "conversation": CONVERSATION,
    "conversation has outbound": CONVERSATION_HAS_OUTBOUND,
    "queued deliveries": QUEUED_DELIVERIES,
    "latest policy.loaded": LATEST_POLICY_LOADED,
    "review verdicts (one)": REVIEW_VERDICTS.format(where=REVIEW_WHERE["one"]),
    "review messages (one)": REVIEW_MESSAGES.format(where=REVIEW_WHERE["one"]),
    "review decisions (one)": REVIEW_DECISIONS.format(where=REVIEW_WHERE["one"]),
    "review verdicts (pending)": REVIEW_VERDICTS.format(where=REVIEW_WHERE["pending"]),
    "review messages (pending)": REVIEW_MESSAGES.format(where=REVIEW_WHERE["pending"]),
    "review decisions (pending)": REVIEW_DECISIONS.format(where=REVIEW_WHERE["pending"]),
    "conversation history": CONVERSATION_HISTORY,
    "queued in conversation": QUEUED_IN_CONVERSATION,
    "held notice to": HELD_NOTICE_TO,
    "employee conversations": EMPLOYEE_CONVERSATIONS,
    "conversation of employee": CONVERSATION_OF_EMPLOYEE,
    "last checkpoint": LAST_CHECKPOINT,
    "compliance state events": COMPLIANCE_STATE_EVENTS,
}
"""Name -> SQL of every hot-path read, for the plan test and the scale benchmark."""

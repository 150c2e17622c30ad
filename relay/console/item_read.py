"""One review item from the projections and the conversation's own events (by the
`events_conversation` index): the message, its rules, the conversation around it, what each
recipient received and earlier decisions."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

CONTEXT = 5
AFTER_KINDS = ("delivery.queued", "message.delivered", "delivery.failed", "delivery.receipt", "review.decided")


@dataclass
class Item:
    message_id: str
    queue: dict[str, Any]
    message: dict[str, Any]
    body: dict[str, Any]
    restricted: bool
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)


async def load(console: Any, message_id: str) -> Item | None:
    j = console.journal
    rows = await j.fetchall("SELECT * FROM review_queue WHERE message_id = ?", (message_id,))
    if not rows:
        return None
    queue = dict(rows[0])
    mrows = await j.fetchall("SELECT m.*, c.client_channel, c.client_user, c.client_display FROM messages m"
                             " LEFT JOIN conversations c ON c.id = m.conversation WHERE m.id = ?", (message_id,))
    if not mrows:
        return None
    message = dict(mrows[0])
    ev = await j.fetchall("SELECT body_json FROM events WHERE seq = ?", (message["seq"],))
    body = json.loads(ev[0]["body_json"]) if ev else {}
    restricted = console.is_restricted(int(message["seq"]), message["client_channel"], message["client_user"],
                                       await console.restricted())
    item = Item(message_id, queue, message, body, restricted)
    marks = ",".join("?" * len(AFTER_KINDS))
    conv = message["conversation"]
    later = await j.fetchall(
        f"SELECT seq, ts, kind, body_json FROM events WHERE conversation = ? AND seq > ? AND kind IN ({marks})"
        " AND json_extract(body_json, '$.message_id') = ? ORDER BY seq LIMIT 500",
        (conv, message["seq"], *AFTER_KINDS, message_id))
    by_delivery: dict[str, dict[str, Any]] = {}
    for r in later:
        b = json.loads(r["body_json"])
        if r["kind"] == "review.decided":
            item.decisions.append({**b, "seq": r["seq"], "ts": r["ts"]})
        elif r["kind"] == "delivery.queued":
            d = {"delivery_id": b.get("delivery_id"), "to": b.get("to") or {}, "out": b.get("out") or {},
                 "queued_ts": r["ts"], "state": "queued", "events": []}
            by_delivery[str(b.get("delivery_id"))] = d
            item.deliveries.append(d)
        else:
            d = by_delivery.get(str(b.get("delivery_id")))
            if d is None:
                continue
            d["events"].append({"kind": r["kind"], "ts": r["ts"], **b})
            if r["kind"] == "message.delivered":
                d["state"] = "delivered"
            elif r["kind"] == "delivery.failed" and b.get("permanent"):
                d["state"] = "failed"
    return item


async def context(console: Any, conversation: str | None, seq: int, before: int | None, after: int | None,
                  n: int = CONTEXT) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Messages before and after `seq` in the conversation (paged by seq), restricted ones withheld."""
    j = console.journal
    cols = ("SELECT m.id, m.seq, m.ts, m.direction, m.kind, m.sender_user, m.sender_display, m.text, m.action,"
            " m.erased, c.client_channel, c.client_user FROM messages m LEFT JOIN conversations c ON c.id = m.conversation")
    upto = before if before is not None else seq
    start = after if after is not None else seq
    prev = await j.fetchall(cols + " WHERE m.conversation = ? AND m.seq < ? ORDER BY m.seq DESC LIMIT ?", (conversation, upto, n))
    nxt = await j.fetchall(cols + " WHERE m.conversation = ? AND m.seq > ? ORDER BY m.seq LIMIT ?", (conversation, start, n))
    restricted = await console.restricted()

    def shown(r: Any) -> dict[str, Any]:
        d = dict(r)
        d["restricted"] = console.is_restricted(int(r["seq"]), r["client_channel"], r["client_user"], restricted)
        if d["restricted"]:
            d["text"], d["sender_display"] = "", None
        return d
    return [shown(r) for r in reversed(prev)], [shown(r) for r in nxt]

"""Journal reads the pipeline makes for items that refer to earlier ones: receipts and edits.

A status event must be linked to the delivery it reports on, and an edit must keep the
disclaimers its original carried; both are answered from the projections, not from memory.
"""

from __future__ import annotations

import json

from relay.hub_records import Event, message_id_for
from relay.journal import Journal, lookups
from relay.model import Inbound

RECEIPT_PREFIXES = ("receipt", "marker:", "status:", "error:")


async def receipt_events(journal: Journal, inb: Inbound, mid: str) -> list[Event]:
    """Link a network's status or receipt event to the delivery it is about.

    Adapters report receipts as events whose `reply_to` is the platform id their `send`
    returned (`receipt`, `marker:…`, `status:<state>`, `error: …`). A failure status also
    becomes a permanent `delivery.failed`, so the sender is told.
    """
    status = inb.text.strip()
    if not inb.reply_to or not status.startswith(RECEIPT_PREFIXES):
        return []
    rows = await journal.fetchall(lookups.RECEIPT_DELIVERY, (inb.channel, inb.reply_to, f"template:{inb.reply_to}"))
    if not rows:
        return []
    r = rows[0]
    base = {"delivery_id": r["delivery_id"], "message_id": r["message_id"], "channel": inb.channel,
            "platform_id": r["platform_id"]}
    return _linked(base, status, mid, r["conversation"])


def _linked(base: dict[str, object], status: str, mid: str, conversation: str | None) -> list[Event]:
    out: list[Event] = [("delivery.receipt", {**base, "status": status, "event_id": mid}, conversation)]
    if status.startswith(("status:failed", "error:")):
        out.append(("delivery.failed", {**base, "reason": f"the network reported: {status}", "permanent": True,
                                        "attempt": 0}, conversation))
    return out


async def early_receipts(journal: Journal, delivered: dict[str, object], delivered_seq: int,
                         conversation: str | None) -> list[Event]:
    """Receipts journaled before `message.delivered` (seq below `delivered_seq`), now linked.

    A status callback can beat the send's own answer; it was journaled then with nothing to
    link to. Those before the delivered event cannot have been linked, later ones were.
    """
    channel, pid = str(delivered.get("channel") or ""), str(delivered.get("platform_id") or "")
    if not channel or not pid:
        return []
    sid = pid.removeprefix("template:")
    rows = await journal.fetchall(lookups.EARLY_RECEIPTS, (message_id_for(channel, sid), channel, delivered_seq))
    base = {k: delivered.get(k) for k in ("delivery_id", "message_id", "channel", "platform_id")}
    out: list[Event] = []
    for r in rows:
        status = (r["text"] or "").strip()
        if status.startswith(RECEIPT_PREFIXES):
            out += _linked(base, status, r["id"], conversation)
    return out


async def inherited_disclaimers(journal: Journal, inb: Inbound) -> tuple[str, ...]:
    """An edit keeps the disclaimers its original carried (e.g. the recording notice)."""
    if inb.kind != "edit" or not inb.edits:
        return ()
    rows = await journal.fetchall(lookups.LATEST_VERDICT, (message_id_for(inb.channel, inb.edits),))
    return tuple(json.loads(rows[0]["body_json"]).get("disclaimers") or ()) if rows else ()

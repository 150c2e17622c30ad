"""Review re-entry: a quarantined message released (delivered) or rejected (sender told).

A held delivery is kept in memory while the relay runs and rebuilt from the journal after a
restart, so a reviewer's decision works the same either way.
"""

from __future__ import annotations

import json

from relay.hub_notices import HubNotices
from relay.hub_records import Event, delivery_id_for, verdict_from_json
from relay.journal import lookups
from relay.model import Party
from relay.outbox import Delivery, party_json, party_of
from relay.policy import apply_verdict


class HubReview(HubNotices):
    """Mixed into `relay.hub.Hub`, which sets these attributes."""

    _held: dict[str, Delivery]

    async def held_delivery(self, message_id: str) -> Delivery | None:
        """The delivery a quarantined message would make, rebuilt from the journal."""
        d = self._held.get(message_id)
        if d is not None:
            return d
        rows = await self.journal.fetchall(lookups.RECEIVED_EVENT, (message_id,))
        vrows = await self.journal.fetchall(lookups.LATEST_VERDICT, (message_id,))
        if not rows or not vrows:
            return None
        body = json.loads(rows[0]["body_json"])
        vb = json.loads(vrows[0]["body_json"])
        conv = await self.router.get(rows[0]["conversation"])
        if conv is None:
            return None
        verdict = verdict_from_json(vb)
        if body["direction"] == "inbound":
            if conv.employee is None:
                return None
            to = self.router.staff_party(conv.employee)
        else:
            to = conv.client
        out = {"kind": body.get("kind", "message"), "text": apply_verdict(body.get("text", ""), verdict),
               "attachments": [a for a in body.get("attachments", []) if not a.get("refused")],
               "reply_to": body.get("reply_to"), "edits": body.get("edits"),
               "origin": body.get("sender"), "client": party_json(conv.client),
               "action": verdict.action, "rules": [r["rule"] for r in vb.get("rules", [])]}
        did = delivery_id_for(message_id, to.channel, to.user, out["kind"])
        return Delivery(did, message_id, conv.id, to.channel, to, out)

    async def release(self, message_id: str, actor: str, reason: str = "") -> Delivery:
        """Deliver a quarantined message after a reviewer's release (journaled as review.decided)."""
        d = await self.held_delivery(message_id)
        if d is None:
            raise LookupError(f"no held message {message_id!r}")
        done = await self.journal.fetchall(lookups.DELIVERY_EXISTS, (d.delivery_id,))
        events: list[Event] = [("review.decided", {"message_id": message_id, "decision": "release",
                                                   "reviewer": actor, "reason": reason}, d.conversation)]
        if not done:
            events.append(("delivery.queued", {"delivery_id": d.delivery_id, "message_id": message_id,
                                               "channel": d.channel, "to": party_json(d.to), "out": {**d.out, "action": "quarantine"}},
                           d.conversation))
        told = await self._released_notice(events, message_id, d.conversation)
        await self.journal.append_many(events)
        self._held.pop(message_id, None)
        if not done:
            self.outbox.enqueue(d)
        if told is not None:
            self.outbox.enqueue(told)
        return d

    async def _released_notice(self, events: list[Event], message_id: str, conversation: str) -> Delivery | None:
        """The sender who was told their message is held is told it is released (a silent hold stays silent)."""
        rows = await self.journal.fetchall(lookups.HELD_NOTICE_TO, (message_id,))
        if not rows:
            return None
        sender = party_of(json.loads(rows[0]["to_json"] or "null"))
        if sender is None or sender.channel not in self.config.channels:
            return None
        conv = await self.router.get(conversation) if conversation else None
        return self._notice(events, message_id, conv, sender, self.config.notices["released"],
                            conversation=conversation, about="released")

    async def reject(self, message_id: str, actor: str, reason: str = "") -> None:
        """Never deliver a quarantined message; the sender is told."""
        rows = await self.journal.fetchall("SELECT conversation, sender_channel, sender_user, sender_display "
                                           "FROM messages WHERE id = ?", (message_id,))
        if not rows:
            raise LookupError(f"no message {message_id!r}")
        r = rows[0]
        conv = await self.router.get(r["conversation"]) if r["conversation"] else None
        events: list[Event] = [("review.decided", {"message_id": message_id, "decision": "reject",
                                                   "reviewer": actor, "reason": reason}, r["conversation"])]
        deliveries: list[Delivery] = []
        if r["sender_channel"] in self.config.channels:
            sender = Party(r["sender_channel"], r["sender_user"], r["sender_display"] or "")
            deliveries.append(self._notice(events, message_id, conv, sender, self.config.notices["rejected"],
                                           conversation=r["conversation"], about="rejected"))
        await self.journal.append_many(events)
        self._held.pop(message_id, None)
        for d in deliveries:
            self.outbox.enqueue(d)

"""What the relay itself says: notices, system messages and alerts, each journaled first.

Every message the relay originates (a refusal, a welcome, an alert, the undeliverable notice)
is queued through one place so it gets a deterministic delivery id and a journal entry.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from relay.config import Config
from relay.hub_policy import HubPolicy
from relay.hub_records import SYSTEM, Event, RawRefs, delivery_id_for, message_id_for, received_body, verdict_json
from relay.journal import Journal
from relay.model import Inbound, Party
from relay.outbox import Delivery, Outbox, party_json
from relay.policy import apply_verdict
from relay.routing import Conversation, Router


class HubNotices(HubPolicy):
    """Mixed into `relay.hub.Hub`, which sets these attributes."""

    config: Config
    journal: Journal
    router: Router
    outbox: Outbox

    def _queue(self, events: list[Event], mid: str, conv: Conversation | None, to: Party, out: dict[str, Any]) -> Delivery:
        cid = conv.id if conv else ""
        did = delivery_id_for(mid, to.channel, to.user, out.get("kind", "message"),
                              out.get("text", "") if out.get("kind") == "notice" else "")
        body = {"delivery_id": did, "message_id": mid, "channel": to.channel, "to": party_json(to), "out": out}
        if out.get("action") != "quarantine":
            events.append(("delivery.queued", body, cid or None))
        return Delivery(did, mid, cid, to.channel, to, out)

    def _notice(self, events: list[Event], mid: str, conv: Conversation | None, to: Party, text: str,
                conversation: str | None = None, about: str = "", extra: dict[str, Any] | None = None) -> Delivery:
        """A notice from the relay; `about` (held, rejected…) makes it answer message `mid` of `to`."""
        out = {"kind": "notice", "text": text, "attachments": [], "origin": party_json(SYSTEM),
               "client": party_json(conv.client) if conv else None, "action": "allow", "rules": []}
        if about:
            out.update(about=about, reply_to=mid)
        if extra:
            out.update(extra)
        d = self._queue(events, mid, conv, to, out)
        if conversation and not d.conversation:
            d.conversation = conversation
        return d

    def _system_message(self, events: list[Event], conv: Conversation, text: str, platform_id: str) -> list[Delivery]:
        """A message the relay itself sends a client (welcome, handover notice): journaled and policy-checked."""
        inb = Inbound(channel="relay", platform_id=platform_id, sender=SYSTEM, chat=conv.id, text=text)
        mid = message_id_for("relay", platform_id)
        body = received_body(inb, mid, "outbound", (), RawRefs(), conv, None)
        events.append(("message.received", body, conv.id))
        verdict = self._evaluate(self._eval_input("outbound", conv.client.channel, text, (), (), conv, mid))
        events.append(("policy.verdict", verdict_json(verdict, mid), conv.id))
        if verdict.action in ("block", "quarantine"):
            return []
        out = {"kind": "notice", "text": apply_verdict(text, verdict), "attachments": [], "origin": party_json(SYSTEM),
               "client": party_json(conv.client), "action": verdict.action, "rules": list(verdict.rules)}
        conv.has_outbound = True
        return [self._queue(events, mid, conv, conv.client, out)]


    # -- used by handover, alerts and the outbox ----------------------------------------------
    async def notify(self, channel: str, address: str, text: str, conversation: str | None = None,
                     key: str | None = None, handed_from: Party | None = None) -> Delivery:
        """Send a journaled alert or notice to any configured channel address; with `handed_from`
        it is the handover notice of `conversation` (about "handover"), so a desk that shows the
        history itself can show it as a one-line marker."""
        if channel not in self.config.channels:
            raise ValueError(f"no channel named {channel!r}")
        mid = "a-" + hashlib.sha256(f"{key or time.time_ns()}\x00{channel}\x00{address}".encode()).hexdigest()[:24]
        conv = await self.router.get(conversation) if conversation else None
        events: list[Event] = []
        handover = {"about": "handover", "handed_from": party_json(handed_from)} if handed_from is not None else None
        d = self._notice(events, mid, conv, Party(channel, address), text, conversation=conversation, extra=handover)
        await self.journal.append_many(events)
        self.outbox.enqueue(d)
        return d

    async def send_system_message(self, conversation: str, text: str, key: str) -> list[Delivery]:
        """A policy-checked message from the relay to a conversation's client (e.g. handover notice)."""
        conv = await self.router.get(conversation)
        if conv is None:
            raise LookupError(f"no conversation {conversation!r}")
        events: list[Event] = []
        deliveries = self._system_message(events, conv, text, key)
        await self.journal.append_many(events)
        for d in deliveries:
            self.outbox.enqueue(d)
        return deliveries

    async def on_permanent_failure(self, d: Delivery, reason: str) -> None:
        """The outbox's hook: tell the sender (not for notices, to avoid loops)."""
        if d.out.get("kind") != "notice":
            await self.tell_sender_undelivered(d.message_id, reason)

    async def tell_sender_undelivered(self, message_id: str, reason: str) -> None:
        """Send the `undeliverable` notice to whoever wrote `message_id`, if relay can reach them."""
        rows = await self.journal.fetchall("SELECT sender_channel, sender_user, sender_display, conversation "
                                           "FROM messages WHERE id = ?", (message_id,))
        if not rows or rows[0]["sender_channel"] not in self.config.channels:
            return
        r = rows[0]
        conv = await self.router.get(r["conversation"]) if r["conversation"] else None
        events: list[Event] = []
        if self.config.channels[r["sender_channel"]].side == "client":  # internal errors stay internal
            text = self.config.notices["undeliverable_client"]
        else:
            text = self.config.notices["undeliverable"].replace("{reason}", reason)
        n = self._notice(events, message_id, conv, Party(r["sender_channel"], r["sender_user"], r["sender_display"] or ""),
                         text, conversation=r["conversation"], about="undeliverable")
        await self.journal.append_many(events)
        self.outbox.enqueue(n)

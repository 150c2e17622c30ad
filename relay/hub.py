"""The pipeline every message takes: receive → journal → policy → route → outbox.

`receive()` is the `deliver` callback the channels call. It stores the raw payload and the
attachment bytes as blobs, then journals `message.received`, the `policy.verdict` and the
resulting `delivery.queued` events in one group commit, and only then returns, so an adapter
acknowledges its network only for what is durable. Redeliveries are recognised by
`(channel, platform_id)` and acknowledged without a second entry.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from dataclasses import replace
from typing import Callable

from bots.base import Deliver
from relay.config import Config
from relay.hub_lookups import inherited_disclaimers, receipt_events
from relay.hub_policy import with_integrity_flag
from relay.hub_records import Event, HubStats, RawRefs, attachment_json, message_id_for, received_body, verdict_json
from relay.hub_review import HubReview
from relay.journal import Journal
from relay.model import Attachment, Inbound, Party, Receipt, Verdict, conversation_id
from relay.outbox import Delivery, Outbox, party_json
from relay.policy import PolicySet, apply_verdict
from relay.routing import Conversation, Router, RoutingError
from relay.valid_input import valid_inbound

log = logging.getLogger("relay.hub")

INLINE_RAW_MAX = 16 * 1024
"""Raw payloads up to this size travel inside the event (one fsync with it); larger ones are blobs."""


class Hub(HubReview):
    """Composes journal, policy, routing and outbox; knows no chat network."""

    def __init__(
        self,
        config: Config,
        journal: Journal,
        router: Router,
        outbox: Outbox,
        policies: Callable[[], PolicySet],
        shadow: Callable[[], PolicySet | None] | None = None,
    ) -> None:
        self.config = config
        self.journal = journal
        self.router = router
        self.outbox = outbox
        self.policies = policies
        self.shadow = shadow
        self.stats = HubStats()
        self._inflight: dict[str, asyncio.Future[Receipt]] = {}
        self._recent: OrderedDict[str, Receipt] = OrderedDict()
        self._locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}
        """Per-conversation lock and its number of users; dropped when nobody holds or awaits it."""
        self._held: dict[str, Delivery] = {}

    # -- entry points ---------------------------------------------------------------------
    def deliver_for(self, channel: str) -> Deliver:
        """The callback handed to a channel's `start`; it pins the channel name."""

        async def deliver(inbound: Inbound) -> Receipt:
            if inbound.channel != channel:
                inbound = replace(inbound, channel=channel)
            return await self.receive(inbound)

        return deliver

    async def receive(self, inbound: Inbound) -> Receipt:
        """Journal an inbound item (deduplicated) and queue what it leads to."""
        if inbound.channel not in self.config.channels:
            raise ValueError(f"unknown channel {inbound.channel!r}")
        inbound = valid_inbound(inbound)
        mid = message_id_for(inbound.channel, inbound.platform_id)
        seen = self._recent.get(mid)
        if seen is not None:
            self.stats.duplicates += 1
            return replace(seen, duplicate=True)
        pending = self._inflight.get(mid)
        if pending is not None:
            receipt = await asyncio.shield(pending)
            self.stats.duplicates += 1
            return replace(receipt, duplicate=True)
        fut: asyncio.Future[Receipt] = asyncio.get_running_loop().create_future()
        self._inflight[mid] = fut
        try:
            receipt = await self._receive(inbound, mid)
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()
            raise
        finally:
            self._inflight.pop(mid, None)
        fut.set_result(receipt)
        self._recent[mid] = receipt
        if len(self._recent) > 50_000:
            self._recent.popitem(last=False)
        return receipt

    # -- the pipeline ---------------------------------------------------------------------
    async def _receive(self, inb: Inbound, mid: str) -> Receipt:
        side = self.config.channels[inb.channel].side
        conv_key = conversation_id(inb.channel, inb.chat) if side == "client" else inb.chat
        lock, users = self._locks.setdefault(conv_key, (asyncio.Lock(), [0]))
        users[0] += 1
        # Calls for one conversation are journaled in the order they were made: the lock is the
        # first thing awaited (FIFO), and it is held only until the events are submitted, so
        # consecutive messages of a conversation can share one group commit.
        try:
            async with lock:
                attachments, raw_sha = await self._store_blobs(inb)
                if side == "client":
                    events, deliveries, conv = await self._from_client(inb, mid, attachments, raw_sha)
                else:
                    events, deliveries, conv = await self._from_staff(inb, mid, attachments, raw_sha)
                committed = self.journal.submit_many(events, unless_message=mid)
        finally:
            users[0] -= 1
            if users[0] == 0:
                self._locks.pop(conv_key, None)
        written = await committed
        if written is None:  # journaled before (a redelivery after a restart)
            self.stats.duplicates += 1
            return Receipt(mid, conv, duplicate=True)
        self.stats.received += 1
        for d in deliveries:
            self.outbox.enqueue(d)
        for kind, body, cid in events:
            if kind == "delivery.failed" and body.get("permanent") and body.get("delivery_id"):
                await self.tell_sender_undelivered(body["message_id"], body["reason"])
        return Receipt(mid, conv)

    async def _store_blobs(self, inb: Inbound) -> tuple[tuple[Attachment, ...], RawRefs]:
        limit = self.config.max_attachment_bytes
        kept: list[Attachment] = []
        puts = []
        for a in inb.attachments:
            if a.refused or not a.data:
                kept.append(a.without_data() if a.refused else replace(a.without_data(), refused=a.refused or "no content received"))
                continue
            if len(a.data) > limit:
                kept.append(replace(a.without_data(), size=len(a.data), refused=f"too large: {len(a.data)} > {limit} bytes"))
                continue
            kept.append(a)
            puts.append(a)
        shas = await asyncio.gather(*(self.journal.put_blob(a.data) for a in puts))
        by_obj = {id(a): s for a, s in zip(puts, shas)}
        final = tuple(
            replace(a.without_data(), sha256=by_obj[id(a)], size=len(a.data)) if id(a) in by_obj else a for a in kept
        )
        raw_sha = await self.journal.put_blob(inb.raw) if len(inb.raw) > INLINE_RAW_MAX else ""
        dec_sha = await self.journal.put_blob(inb.decrypted) if len(inb.decrypted) > INLINE_RAW_MAX else ""
        return final, RawRefs(raw_sha, dec_sha)

    async def _from_client(self, inb: Inbound, mid: str, attachments: tuple[Attachment, ...],
                           raw_sha: RawRefs) -> tuple[list[Event], list[Delivery], str]:
        cid = conversation_id(inb.channel, inb.chat)
        events: list[Event] = []
        conv = await self.router.get(cid)
        if inb.kind == "event" and not inb.notice:
            # statuses, receipts, unreadable payloads: journaled, but they open no conversation
            body = received_body(inb, mid, "inbound", attachments, raw_sha, conv, conv.employee if conv else None)
            events.append(("message.received", body, cid if conv else None))
            events += await receipt_events(self.journal, inb, mid)
            return events, [], cid if conv else ""
        new = conv is None
        if conv is None:
            conv = Conversation(cid, Party(inb.channel, inb.chat, inb.sender.display), None)
            desk = self.config.desk_for_channel(inb.channel)
            conv.desk = desk.name if desk else None
        if conv.employee is None or not self.router.is_active(conv.employee):
            previous = conv.employee
            try:
                chosen = self.router.choose(inb.channel, exclude=previous)
            except RoutingError as exc:
                log.warning("conversation %s: %s", cid, exc)
                chosen = None
            if chosen is not None:
                reason = "new conversation" if previous is None else f"{previous} is not active"
                conv = replace(conv, employee=chosen)
                events.append(self.router.assignment_event(conv, chosen, previous, "relay", reason))
        if inb.sender.display and inb.sender.display != conv.client.display:
            conv = replace(conv, client=replace(conv.client, display=inb.sender.display))
        self.router.remember(conv)

        events.append(("message.received",
                       received_body(inb, mid, "inbound", attachments, raw_sha, conv, conv.employee), cid))
        deliveries: list[Delivery] = []
        if conv.employee is not None:
            to = self.router.staff_party(conv.employee)
            if inb.kind == "event":  # something the client sent that cannot be shown: the employee is told
                deliveries.append(self._notice(events, mid, conv, to, inb.notice))
            else:
                inherited = await inherited_disclaimers(self.journal, inb)
                deliveries += self._evaluate_and_route(inb, mid, "inbound", attachments, conv, to, (), events, inherited)
        else:
            events.append(("delivery.failed", {"delivery_id": None, "message_id": mid, "channel": None,
                                               "reason": "no active employee on the desk; waiting for a handover",
                                               "permanent": False, "attempt": 0}, cid))
        refused = [a for a in attachments if a.refused]
        if refused:
            names = ", ".join(a.name or "file" for a in refused)
            deliveries.append(self._notice(events, mid, conv, inb.sender, f"{self.config.notices['oversize']} ({names})"))
        welcome = self.config.channels[inb.channel].welcome
        if new and welcome:
            deliveries += self._system_message(events, conv, welcome, f"welcome:{cid}")
        return events, deliveries, cid

    async def _from_staff(self, inb: Inbound, mid: str, attachments: tuple[Attachment, ...],
                          raw_sha: RawRefs) -> tuple[list[Event], list[Delivery], str]:
        events: list[Event] = []
        conv = await self.router.get(inb.chat)
        emp = self.config.employee_by_address(inb.channel, inb.sender.user)
        refused: str | None = None
        if conv is None:
            refused = f"no conversation {inb.chat!r}"
        elif emp is None:
            refused = f"{inb.sender.user!r} is not a configured employee on {inb.channel}"
        elif not self.router.is_active(emp.id):
            refused = f"employee {emp.id} is deactivated"
        elif conv.employee != emp.id:
            refused = f"conversation is assigned to {conv.employee}, not {emp.id}"
        cid = conv.id if conv else inb.chat
        if inb.kind == "event":
            refused = None
        body = received_body(inb, mid, "outbound", attachments, raw_sha, conv, emp.id if emp else None, refused)
        events.append(("message.received", body, conv.id if conv else None))  # no bogus conversation row
        deliveries: list[Delivery] = []
        if refused is not None:
            self.stats.refused += 1
            log.warning("refused %s from %s: %s", inb.platform_id, inb.sender.user, refused)
            if conv is None:
                text = self.config.notices["unknown_conversation"]
            else:
                text = f"{self.config.notices['refused']} ({refused})"
            deliveries.append(self._notice(events, mid, conv, inb.sender, text, conversation=cid, about="refused"))
            return events, deliveries, cid
        if inb.kind == "event":
            events += await receipt_events(self.journal, inb, mid)
            return events, deliveries, cid
        if conv is None or emp is None:
            return events, deliveries, cid
        inherited = await inherited_disclaimers(self.journal, inb)
        deliveries += self._evaluate_and_route(inb, mid, "outbound", attachments, conv, conv.client, emp.groups,
                                               events, inherited)
        return events, deliveries, cid

    def _evaluate_and_route(self, inb: Inbound, mid: str, direction: str, attachments: tuple[Attachment, ...],
                            conv: Conversation, to: Party, groups: tuple[str, ...], events: list[Event],
                            inherited: tuple[str, ...] = ()) -> list[Delivery]:
        kind = inb.kind if inb.kind in ("message", "edit", "delete") else "message"
        if inb.kind == "event":
            return []
        usable = tuple(a for a in attachments if not a.refused)
        verdict: Verdict | None = None
        if kind != "delete":
            inp = self._eval_input(direction, inb.channel, inb.text, usable, groups, conv, mid)
            verdict = with_integrity_flag(self._evaluate(inp), usable)
            if inherited:
                kept = tuple(d for d in inherited if d not in verdict.disclaimers)
                verdict = replace(verdict, disclaimers=kept + verdict.disclaimers)
            events.append(("policy.verdict", verdict_json(verdict, mid), conv.id))
            shadow = self._shadow_event(inp)
            if shadow is not None:
                events.append(shadow)
            self._count(verdict)
        origin = inb.sender
        if direction == "outbound":
            emp = self.config.employee_by_address(inb.channel, inb.sender.user)
            if emp is not None:
                origin = Party(inb.channel, emp.id, emp.name)
        out = {
            "kind": kind,
            "text": apply_verdict(inb.text, verdict) if verdict else "",
            "attachments": [attachment_json(a) for a in usable],
            "reply_to": message_id_for(inb.channel, inb.reply_to) if inb.reply_to else None,
            "edits": message_id_for(inb.channel, inb.edits) if inb.edits else None,
            "origin": party_json(origin),
            "client": party_json(conv.client),
            "action": verdict.action if verdict else "allow",
            "rules": list(verdict.rules) if verdict else [],
        }
        if verdict is not None and verdict.action == "block":
            return [self._notice(events, mid, conv, inb.sender, self.config.notices["blocked"], about="blocked")]
        delivery = self._queue(events, mid, conv, to, out)
        if verdict is not None and verdict.action == "quarantine":
            self._held[mid] = delivery
            if self._silent(verdict):
                return []
            return [self._notice(events, mid, conv, inb.sender, self.config.notices["held"], about="held")]
        if direction == "outbound" and kind == "message":
            conv.has_outbound = True
        return [delivery]


__all__ = ["Hub", "HubStats"]

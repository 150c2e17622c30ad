"""The pipeline every message takes: receive → journal → policy → route → outbox.

`receive()` is the `deliver` callback the channels call. It stores the raw payload and the
attachment bytes as blobs, then journals `message.received`, the `policy.verdict` and the
resulting `delivery.queued` events in one group commit, and only then returns, so an adapter
acknowledges its network only for what is durable. Redeliveries are recognised by
`(channel, platform_id)` and acknowledged without a second entry.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any, Callable

from bots.base import Deliver
from relay.config import Config
from relay.journal import Journal
from relay.model import Attachment, Inbound, Party, Receipt, RuleHit, Span, Verdict, action_rank, conversation_id
from relay.outbox import Delivery, Outbox, party_json, party_of
from relay.policy import EvalInput, PolicySet, apply_verdict
from relay.routing import Conversation, Router, RoutingError

log = logging.getLogger("relay.hub")

SYSTEM = Party("relay", "system", "relay")
RECEIPT_PREFIXES = ("receipt", "marker:", "status:", "error:")
INLINE_RAW_MAX = 16 * 1024
"""Raw payloads up to this size travel inside the event (one fsync with it); larger ones are blobs."""
Event = tuple[str, dict[str, Any], str | None]


@dataclass(frozen=True)
class RawRefs:
    """Blob digests of a received item's raw payload and of its decrypted form ('' = inline)."""

    raw: str = ""
    decrypted: str = ""


def message_id_for(channel: str, platform_id: str) -> str:
    """Deterministic relay id of a received item, so a redelivery maps to the same id."""
    return "m-" + hashlib.sha256(f"{channel}\x00{platform_id}".encode()).hexdigest()[:24]


def delivery_id_for(message_id: str, channel: str, user: str, kind: str, text: str = "") -> str:
    """Deterministic, so a re-run of the same decision cannot queue the same delivery twice."""
    key = f"{message_id}\x00{channel}\x00{user}\x00{kind}\x00{text}"
    return "d-" + hashlib.sha256(key.encode()).hexdigest()[:24]


def verdict_json(v: Verdict, message_id: str) -> dict[str, Any]:
    return {
        "message_id": message_id,
        "action": v.action,
        "review": v.review,
        "rules": [
            {"rule": h.rule, "policy": h.policy, "action": h.action, "severity": h.severity, "title": h.title,
             "spans": [[s.start, s.end] for s in h.spans], "sampled": h.sampled}
            for h in v.matched
        ],
        "disclaimers": list(v.disclaimers),
        "redactions": [[s.start, s.end] for s in v.redactions],
        "policy_version": v.policy_version,
    }


def attachment_json(a: Attachment) -> dict[str, Any]:
    out = {"name": a.name, "mime": a.mime, "size": a.size, "sha256": a.sha256,
           "platform_ref": a.platform_ref, "refused": a.refused}
    if a.integrity:
        out["integrity"] = a.integrity
    return out


INTEGRITY_RULE = "RELAY-INTEGRITY"
"""The hit the hub adds when a file's bytes differ from what the network declared: flagged for review."""


def with_integrity_flag(verdict: Verdict, attachments: tuple[Attachment, ...]) -> Verdict:
    """`verdict`, at least flagged and in review, with one hit per attachment whose bytes do not
    match what the network declared (compliance must see such a file, not take it on trust)."""
    bad = [a for a in attachments if a.integrity]
    if not bad:
        return verdict
    hits = tuple(RuleHit(INTEGRITY_RULE, "relay", "flag", "high", f"{a.name or 'file'}: {a.integrity}"[:300])
                 for a in bad)
    action = verdict.action if action_rank(verdict.action) >= action_rank("flag") else "flag"
    return replace(verdict, action=action, matched=verdict.matched + hits, review=True)


@dataclass
class HubStats:
    received: int = 0
    duplicates: int = 0
    refused: int = 0
    blocked: int = 0
    quarantined: int = 0
    flagged: int = 0
    redacted: int = 0
    policy_errors: int = 0


class Hub:
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

    def _received_body(self, inb: Inbound, mid: str, direction: str, attachments: tuple[Attachment, ...],
                       raw_sha: RawRefs, conv: Conversation | None, employee: str | None,
                       refused: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": mid,
            "direction": direction,
            "channel": inb.channel,
            "platform_id": inb.platform_id,
            "chat": inb.chat,
            "kind": inb.kind,
            "sender": party_json(inb.sender),
            "text": inb.text,
            "attachments": [attachment_json(a) for a in attachments],
            "reply_to": message_id_for(inb.channel, inb.reply_to) if inb.reply_to else None,
            "edits": message_id_for(inb.channel, inb.edits) if inb.edits else None,
            "reply_to_platform": inb.reply_to,
            "edits_platform": inb.edits,
            "sent_at": inb.sent_at,
            "raw_sha256": raw_sha.raw or None,
            "client": party_json(conv.client) if conv else None,
            "employee": employee,
        }
        if inb.raw and not raw_sha.raw:
            body["raw_inline"] = base64.b64encode(inb.raw).decode("ascii")
            body["raw_digest"] = hashlib.sha256(inb.raw).hexdigest()
        if raw_sha.decrypted:
            body["decrypted_sha256"] = raw_sha.decrypted
        elif inb.decrypted:
            body["decrypted_inline"] = base64.b64encode(inb.decrypted).decode("ascii")
            body["decrypted_digest"] = hashlib.sha256(inb.decrypted).hexdigest()
        if refused:
            body["refused"] = refused
        if inb.notice:
            body["notice"] = inb.notice
        return body

    async def _from_client(self, inb: Inbound, mid: str, attachments: tuple[Attachment, ...],
                           raw_sha: RawRefs) -> tuple[list[Event], list[Delivery], str]:
        cid = conversation_id(inb.channel, inb.chat)
        events: list[Event] = []
        conv = await self.router.get(cid)
        if inb.kind == "event" and not inb.notice:
            # statuses, receipts, unreadable payloads: journaled, but they open no conversation
            body = self._received_body(inb, mid, "inbound", attachments, raw_sha, conv, conv.employee if conv else None)
            events.append(("message.received", body, cid if conv else None))
            events += await self._receipt_events(inb, mid)
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
                       self._received_body(inb, mid, "inbound", attachments, raw_sha, conv, conv.employee), cid))
        deliveries: list[Delivery] = []
        if conv.employee is not None:
            to = self.router.staff_party(conv.employee)
            if inb.kind == "event":  # something the client sent that cannot be shown: the employee is told
                deliveries.append(self._notice(events, mid, conv, to, inb.notice))
            else:
                inherited = await self._inherited_disclaimers(inb)
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
        body = self._received_body(inb, mid, "outbound", attachments, raw_sha, conv, emp.id if emp else None, refused)
        events.append(("message.received", body, cid))
        deliveries: list[Delivery] = []
        if refused is not None:
            self.stats.refused += 1
            log.warning("refused %s from %s: %s", inb.platform_id, inb.sender.user, refused)
            text = f"{self.config.notices['refused']} ({refused})"
            deliveries.append(self._notice(events, mid, conv, inb.sender, text, conversation=cid))
            return events, deliveries, cid
        if inb.kind == "event":
            events += await self._receipt_events(inb, mid)
            return events, deliveries, cid
        if conv is None or emp is None:
            return events, deliveries, cid
        inherited = await self._inherited_disclaimers(inb)
        deliveries += self._evaluate_and_route(inb, mid, "outbound", attachments, conv, conv.client, emp.groups,
                                               events, inherited)
        return events, deliveries, cid

    @staticmethod
    def _eval_input(direction: str, channel: str, text: str, attachments: tuple[Attachment, ...],
                    groups: tuple[str, ...], conv: Conversation, mid: str) -> EvalInput:
        return EvalInput(direction=direction, channel=channel, text=text, attachments=attachments,
                         sender_groups=groups, first_in_conversation=direction == "outbound" and not conv.has_outbound,
                         conversation=conv.id, message_id=mid)

    def _evaluate(self, inp: EvalInput) -> Verdict:
        try:
            return self.policies().evaluate(inp)
        except Exception:  # fail closed: hold for review rather than forward unchecked
            self.stats.policy_errors += 1
            log.exception("policy evaluation failed for %s", inp.message_id)
            return Verdict(action="quarantine", review=True, policy_version="error")

    def _shadow_event(self, inp: EvalInput) -> Event | None:
        shadow = self.shadow() if self.shadow else None
        if shadow is None:
            return None
        try:
            v = shadow.evaluate(inp)
        except Exception as exc:
            return ("policy.shadow_verdict", {"message_id": inp.message_id, "error": repr(exc)}, inp.conversation)
        return ("policy.shadow_verdict", {**verdict_json(v, inp.message_id), "shadow": True}, inp.conversation)

    async def _receipt_events(self, inb: Inbound, mid: str) -> list[Event]:
        """Link a network's status or receipt event to the delivery it is about.

        Adapters report receipts as events whose `reply_to` is the platform id their `send`
        returned (`receipt`, `marker:…`, `status:<state>`, `error: …`). A failure status also
        becomes a permanent `delivery.failed`, so the sender is told.
        """
        status = inb.text.strip()
        if not inb.reply_to or not status.startswith(RECEIPT_PREFIXES):
            return []
        rows = await self.journal.fetchall(
            "SELECT delivery_id, message_id, conversation, platform_id FROM deliveries WHERE channel = ? "
            "AND platform_id IN (?, ?) ORDER BY seq DESC LIMIT 1",
            (inb.channel, inb.reply_to, f"template:{inb.reply_to}"))
        if not rows:
            return []
        r = rows[0]
        base = {"delivery_id": r["delivery_id"], "message_id": r["message_id"], "channel": inb.channel,
                "platform_id": r["platform_id"]}
        out: list[Event] = [("delivery.receipt", {**base, "status": status, "event_id": mid}, r["conversation"])]
        if status.startswith(("status:failed", "error:")):
            out.append(("delivery.failed", {**base, "reason": f"the network reported: {status}", "permanent": True,
                                            "attempt": 0}, r["conversation"]))
        return out

    async def _inherited_disclaimers(self, inb: Inbound) -> tuple[str, ...]:
        """An edit keeps the disclaimers its original carried (e.g. the recording notice)."""
        if inb.kind != "edit" or not inb.edits:
            return ()
        rows = await self.journal.fetchall(
            "SELECT body_json FROM events WHERE kind = 'policy.verdict' AND json_extract(body_json, '$.message_id') = ? "
            "ORDER BY seq DESC LIMIT 1", (message_id_for(inb.channel, inb.edits),))
        return tuple(json.loads(rows[0]["body_json"]).get("disclaimers") or ()) if rows else ()

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
            return [self._notice(events, mid, conv, inb.sender, self.config.notices["blocked"])]
        delivery = self._queue(events, mid, conv, to, out)
        if verdict is not None and verdict.action == "quarantine":
            self._held[mid] = delivery
            return []
        if direction == "outbound" and kind == "message":
            conv.has_outbound = True
        return [delivery]

    def _count(self, v: Verdict) -> None:
        if v.action == "block":
            self.stats.blocked += 1
        elif v.action == "quarantine":
            self.stats.quarantined += 1
        elif v.action == "flag":
            self.stats.flagged += 1
        elif v.action == "redact":
            self.stats.redacted += 1

    def _queue(self, events: list[Event], mid: str, conv: Conversation | None, to: Party, out: dict[str, Any]) -> Delivery:
        cid = conv.id if conv else ""
        did = delivery_id_for(mid, to.channel, to.user, out.get("kind", "message"),
                              out.get("text", "") if out.get("kind") == "notice" else "")
        body = {"delivery_id": did, "message_id": mid, "channel": to.channel, "to": party_json(to), "out": out}
        if out.get("action") != "quarantine":
            events.append(("delivery.queued", body, cid or None))
        return Delivery(did, mid, cid, to.channel, to, out)

    def _notice(self, events: list[Event], mid: str, conv: Conversation | None, to: Party, text: str,
                conversation: str | None = None) -> Delivery:
        out = {"kind": "notice", "text": text, "attachments": [], "origin": party_json(SYSTEM),
               "client": party_json(conv.client) if conv else None, "action": "allow", "rules": []}
        d = self._queue(events, mid, conv, to, out)
        if conversation and not d.conversation:
            d.conversation = conversation
        return d

    def _system_message(self, events: list[Event], conv: Conversation, text: str, platform_id: str) -> list[Delivery]:
        """A message the relay itself sends a client (welcome, handover notice): journaled and policy-checked."""
        inb = Inbound(channel="relay", platform_id=platform_id, sender=SYSTEM, chat=conv.id, text=text)
        mid = message_id_for("relay", platform_id)
        body = self._received_body(inb, mid, "outbound", (), RawRefs(), conv, None)
        events.append(("message.received", body, conv.id))
        verdict = self._evaluate(self._eval_input("outbound", conv.client.channel, text, (), (), conv, mid))
        events.append(("policy.verdict", verdict_json(verdict, mid), conv.id))
        if verdict.action in ("block", "quarantine"):
            return []
        out = {"kind": "notice", "text": apply_verdict(text, verdict), "attachments": [], "origin": party_json(SYSTEM),
               "client": party_json(conv.client), "action": verdict.action, "rules": list(verdict.rules)}
        conv.has_outbound = True
        return [self._queue(events, mid, conv, conv.client, out)]

    # -- used by review, handover and alerts ------------------------------------------------
    async def held_delivery(self, message_id: str) -> Delivery | None:
        """The delivery a quarantined message would make, rebuilt from the journal."""
        d = self._held.get(message_id)
        if d is not None:
            return d
        rows = await self.journal.fetchall("SELECT body_json, conversation FROM events WHERE kind = 'message.received' "
                                           "AND json_extract(body_json, '$.id') = ? LIMIT 1", (message_id,))
        vrows = await self.journal.fetchall("SELECT body_json FROM events WHERE kind = 'policy.verdict' "
                                            "AND json_extract(body_json, '$.message_id') = ? ORDER BY seq DESC LIMIT 1",
                                            (message_id,))
        if not rows or not vrows:
            return None
        body = json.loads(rows[0]["body_json"])
        vb = json.loads(vrows[0]["body_json"])
        conv = await self.router.get(rows[0]["conversation"])
        if conv is None:
            return None
        verdict = Verdict(action=vb["action"], matched=tuple(RuleHit(r["rule"], r.get("policy", ""), r.get("action", ""))
                                                             for r in vb.get("rules", [])),
                          disclaimers=tuple(vb.get("disclaimers", [])),
                          redactions=tuple(Span(s, e) for s, e in vb.get("redactions", [])),
                          policy_version=vb.get("policy_version", ""))
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
        done = await self.journal.fetchall("SELECT 1 FROM deliveries WHERE delivery_id = ?", (d.delivery_id,))
        events: list[Event] = [("review.decided", {"message_id": message_id, "decision": "release",
                                                   "reviewer": actor, "reason": reason}, d.conversation)]
        if not done:
            events.append(("delivery.queued", {"delivery_id": d.delivery_id, "message_id": message_id,
                                               "channel": d.channel, "to": party_json(d.to), "out": {**d.out, "action": "quarantine"}},
                           d.conversation))
        await self.journal.append_many(events)
        self._held.pop(message_id, None)
        if not done:
            self.outbox.enqueue(d)
        return d

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
                                           conversation=r["conversation"]))
        await self.journal.append_many(events)
        self._held.pop(message_id, None)
        for d in deliveries:
            self.outbox.enqueue(d)

    async def notify(self, channel: str, address: str, text: str, conversation: str | None = None,
                     key: str | None = None) -> Delivery:
        """Send a journaled alert or notice to any configured channel address."""
        if channel not in self.config.channels:
            raise ValueError(f"no channel named {channel!r}")
        mid = "a-" + hashlib.sha256(f"{key or time.time_ns()}\x00{channel}\x00{address}".encode()).hexdigest()[:24]
        conv = await self.router.get(conversation) if conversation else None
        events: list[Event] = []
        d = self._notice(events, mid, conv, Party(channel, address), text, conversation=conversation)
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
        text = self.config.notices["undeliverable"].replace("{reason}", reason)
        n = self._notice(events, message_id, conv, Party(r["sender_channel"], r["sender_user"], r["sender_display"] or ""),
                         text, conversation=r["conversation"])
        await self.journal.append_many(events)
        self.outbox.enqueue(n)


__all__ = ["Hub", "HubStats", "message_id_for", "delivery_id_for", "party_of"]

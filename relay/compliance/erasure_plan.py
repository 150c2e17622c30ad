"""What an erasure takes away: content scrubbed to tombstones that keep every digest, and the plan
of which events and blobs go now (past retention, or requested) and which holds keep.

Pure functions over the events read; `relay.compliance.erasure` applies a plan to the journal.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from relay.compliance.holds import Hold
from relay.compliance.retention import RetentionSettings
from relay.evidence.collect import Ev

_PARTY_PRIVATE = ("display",)
_ATTACHMENT_PRIVATE = ("name", "platform_ref")


def _scrub_party(p: Any) -> Any:
    if not isinstance(p, dict):
        return p
    return {k: v for k, v in p.items() if k not in _PARTY_PRIVATE}


def _scrub_attachments(atts: Any) -> list[Any]:
    return [{k: v for k, v in a.items() if k not in _ATTACHMENT_PRIVATE} if isinstance(a, dict) else a
            for a in atts or []]


def scrub_content(kind: str, body: dict[str, Any]) -> dict[str, Any]:
    """The body with its content gone and its digests kept (ids, direction, sizes, sha256s):
    what erasure takes away, and what `relay journal show` withholds under an erasure request.
    An assignment keeps whom it moved where and the client's channel and user (the pseudonymous
    key the record needs), not the client's display name."""
    out = dict(body)
    if kind == "message.received":
        for key in ("text", "edits_platform", "reply_to_platform", "raw_inline", "decrypted_inline"):
            out.pop(key, None)
        out["attachments"] = _scrub_attachments(body.get("attachments"))
        for key in ("sender", "client"):
            if key in out:
                out[key] = _scrub_party(out[key])
    elif kind == "delivery.queued":
        o = dict(body.get("out") or {})
        o.pop("text", None)
        o["attachments"] = _scrub_attachments(o.get("attachments"))
        for key in ("origin", "client"):
            if key in o:
                o[key] = _scrub_party(o[key])
        out["out"] = o
        if "to" in out:
            out["to"] = _scrub_party(out["to"])
    elif kind == "conversation.assigned":
        if "client" in out:
            out["client"] = _scrub_party(out["client"])
    return out


def tombstone(kind: str, body: dict[str, Any], reason: str) -> dict[str, Any]:
    """The scrubbed body marked as erased; its digest is recorded in `retention.erased`."""
    out = scrub_content(kind, body)
    out["erased"] = {"reason": reason}
    return out


def _legacy_tombstone(kind: str, body: dict[str, Any], reason: str) -> dict[str, Any]:
    """What `tombstone` made before it removed `raw_inline` (the inline raw payload): needed to
    finish an erasure recorded by that version (`complete_pending`)."""
    out = tombstone(kind, body, reason)
    if kind == "message.received" and "raw_inline" in body:
        out["raw_inline"] = body["raw_inline"]
    return out


LEFTOVER_REASON = "raw payload left by an earlier erasure"


def plan_leftovers(events: list[Ev]) -> ErasurePlan:
    """Erased events that still carry their inline raw payload (tombstones made before that
    field was scrubbed): erased again, so the original text does not outlive the erasure."""
    plan = ErasurePlan()
    for ev in events:
        if ev.kind == "message.received" and isinstance(ev.body.get("erased"), dict) and "raw_inline" in ev.body:
            plan.seqs.append(ev.seq)
            plan.messages.append(str(ev.body.get("id")))
            plan.tombstones[ev.seq] = _without_raw(ev.body)
    return plan


def _without_raw(body: dict[str, Any]) -> dict[str, Any]:
    """An earlier tombstone with its inline raw payload gone (`plan_leftovers`)."""
    out = dict(body)
    out.pop("raw_inline", None)
    return out


def body_digest(body: Any) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()).hexdigest()


def _blob_refs(body: dict[str, Any]) -> list[str]:
    refs = [body.get("raw_sha256"), body.get("decrypted_sha256")] + [a.get("sha256") for a in body.get("attachments") or [] if isinstance(a, dict)]
    out = body.get("out") or {}
    refs += [a.get("sha256") for a in out.get("attachments") or [] if isinstance(a, dict)]
    return [str(r) for r in refs if r]


@dataclass
class ErasurePlan:
    """What `relay retention run` would erase now, and what holds kept."""

    messages: list[str] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)
    blobs: list[str] = field(default_factory=list)
    tombstones: dict[int, dict[str, Any]] = field(default_factory=dict)
    held: dict[str, list[str]] = field(default_factory=dict)
    kept_blobs: list[str] = field(default_factory=list)
    conversations: list[str] = field(default_factory=list)
    """Conversations whose assignments and notices lose the client's display name."""

    def event_body(self, reason: str, actor: str) -> dict[str, Any]:
        return {"seqs": self.seqs, "blobs": self.blobs, "reason": reason, "actor": actor,
                "messages": self.messages, "digests": {str(s): body_digest(b) for s, b in self.tombstones.items()}}

    def summary(self) -> dict[str, Any]:
        return {"messages": len(self.messages), "events": len(self.seqs), "blobs": len(self.blobs),
                "held": {k: len(v) for k, v in self.held.items()}, "message_ids": self.messages,
                "conversations": self.conversations}


def _plan_standalone_notices(events: list[Ev], settings: RetentionSettings, now: float, holds: Mapping[str, Hold],
                             assigned: Mapping[str, set[str]], already: set[int], plan: ErasurePlan, reason: str) -> None:
    """Notices not tied to a journaled message (handover history, alerts) age out with their
    conversation's class (the default class when they belong to none)."""
    messages: set[str] = set()
    clients: dict[str, dict[str, Any]] = {}
    for ev in events:
        if ev.kind == "message.received":
            messages.add(str(ev.body.get("id")))
            if ev.conversation and ev.body.get("client"):
                clients.setdefault(ev.conversation, ev.body["client"])
    for ev in events:
        if ev.kind != "delivery.queued" or ev.seq in already or str(ev.body.get("message_id")) in messages:
            continue
        conv = ev.conversation or ""
        client = clients.get(conv)
        cls = settings.for_channel(str(client.get("channel"))) if client else settings.default
        if ev.ts + cls.seconds > now:
            continue
        blocking = [h.id for h in holds.values() if h.covers(conv, client, assigned.get(conv, set()))]
        if blocking:
            for hid in blocking:
                plan.held.setdefault(hid, []).append(str(ev.body.get("message_id")))
            continue
        plan.seqs.append(ev.seq)
        plan.tombstones[ev.seq] = tombstone(ev.kind, ev.body, reason)


def _assigned_conversation(ev: Ev) -> str:
    return str(ev.body.get("conversation") or ev.conversation or "")


def _plan_conversation_names(events: list[Ev], holds: Mapping[str, Hold], assigned: Mapping[str, set[str]],
                             already: set[int], plan: ErasurePlan, reason: str) -> None:
    """A conversation's assignments (they carry the client's display name) and the notices of no
    journaled message (a handover's history quotes the client) go once every message of the
    conversation is erased, by this plan or an earlier one, and no hold covers the conversation.
    A conversation has one client, so this is when nothing else of that client's in it is kept."""
    erased = already | set(plan.seqs)
    messages: set[str] = set()
    seqs: dict[str, list[int]] = {}
    clients: dict[str, dict[str, Any]] = {}
    emps: dict[str, set[str]] = {}
    for ev in events:
        if ev.kind != "message.received":
            continue
        messages.add(str(ev.body.get("id")))
        if not ev.conversation:
            continue
        seqs.setdefault(ev.conversation, []).append(ev.seq)
        if isinstance(ev.body.get("client"), dict):
            clients.setdefault(ev.conversation, ev.body["client"])
        emps.setdefault(ev.conversation, set()).update(
            str(x) for x in (ev.body.get("employee"), (ev.body.get("sender") or {}).get("user")
                             if ev.body.get("direction") == "outbound" else None) if x)
    done = {c for c, ss in seqs.items() if all(s in erased for s in ss)}
    for ev in events:
        if ev.seq in erased:
            continue
        if ev.kind == "conversation.assigned":
            conv = _assigned_conversation(ev)
        elif ev.kind == "delivery.queued" and str(ev.body.get("message_id")) not in messages:
            conv = ev.conversation or ""
        else:
            continue
        if conv not in done:
            continue
        client = clients.get(conv) or (ev.body.get("client") if ev.kind == "conversation.assigned" else None)
        blocking = [h.id for h in holds.values() if h.covers(conv, client, emps.get(conv, set()) | assigned.get(conv, set()))]
        if blocking:
            what = f"assignment seq {ev.seq}" if ev.kind == "conversation.assigned" else str(ev.body.get("message_id"))
            for hid in blocking:
                if what not in plan.held.setdefault(hid, []):
                    plan.held[hid].append(what)
            continue
        plan.seqs.append(ev.seq)
        plan.tombstones[ev.seq] = tombstone(ev.kind, ev.body, reason)
        if conv not in plan.conversations:
            plan.conversations.append(conv)


def plan_erasure(events: list[Ev], settings: RetentionSettings, now: float,
                 holds: Mapping[str, Hold], only: set[str] | None = None,
                 reason: str = "retention period ended") -> ErasurePlan:
    """Messages past their class's retention (or in `only`) and on no hold, with their events."""
    already: set[int] = set()
    for ev in events:
        if ev.kind == "retention.erased":
            already.update(int(s) for s in ev.body.get("seqs") or [])
    assigned: dict[str, set[str]] = {}
    for ev in events:
        if ev.kind == "conversation.assigned":
            conv = str(ev.body.get("conversation") or ev.conversation)
            assigned.setdefault(conv, set()).update(x for x in (ev.body.get("employee"), ev.body.get("previous")) if x)
    plan = ErasurePlan()
    due: set[str] = set()
    for ev in events:
        if ev.kind != "message.received" or ev.seq in already:
            continue
        b = ev.body
        mid = str(b.get("id"))
        client = b.get("client") or (b.get("sender") if b.get("direction") == "inbound" else None)
        channel = str((client or {}).get("channel") or b.get("channel"))
        if only is None and ev.ts + settings.for_channel(channel).seconds > now:
            continue
        if only is not None and mid not in only:
            continue
        conv = ev.conversation or ""
        emps = {str(b.get("employee") or "")} | assigned.get(conv, set())
        if b.get("direction") == "outbound":
            emps.add(str((b.get("sender") or {}).get("user", "")))
        blocking = [h.id for h in holds.values() if h.covers(conv, client, emps)]
        if blocking:
            for hid in blocking:
                plan.held.setdefault(hid, []).append(mid)
            continue
        due.add(mid)
        plan.messages.append(mid)
        plan.seqs.append(ev.seq)
        plan.tombstones[ev.seq] = tombstone(ev.kind, b, reason)
    for ev in events:
        if ev.kind == "delivery.queued" and str(ev.body.get("message_id")) in due and ev.seq not in already:
            plan.seqs.append(ev.seq)
            plan.tombstones[ev.seq] = tombstone(ev.kind, ev.body, reason)
    if only is None:
        _plan_standalone_notices(events, settings, now, holds, assigned, already, plan, reason)
    _plan_conversation_names(events, holds, assigned, already, plan, reason)
    plan.seqs.sort()
    erasing = set(plan.seqs)
    candidate: set[str] = set()
    keep: set[str] = set()
    for ev in events:
        if ev.kind not in ("message.received", "delivery.queued"):
            continue
        refs = _blob_refs(ev.body)
        if ev.seq in erasing:
            candidate.update(refs)
        elif ev.seq not in already:
            keep.update(refs)
    plan.blobs = sorted(candidate - keep)
    plan.kept_blobs = sorted(candidate & keep)
    return plan

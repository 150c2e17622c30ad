"""Retention classes, legal holds, data-subject erasure requests and the erasure plan.

Holds and erasure requests are journal events (`hold.added`, `hold.released`,
`erasure.requested`), so their state is derived from the chain like everything else. Erasure
never rewrites history silently: the content of an event is replaced by a tombstone that keeps
every digest, a `retention.erased` event records which seqs and blobs went and the digest of
each tombstone, and the journal verifier accepts exactly those tombstones.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from relay.evidence.collect import Ev, Reader, client_key, client_matches, iter_events

YEAR = 365.2425 * 86400
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(y|mo|w|d|h|m|s)\s*$")
_UNIT = {"y": YEAR, "mo": YEAR / 12, "w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}

DEFAULT_PERIOD = "6y"
"""FINRA Rule 4511 / SEA 17a-4(b)(4): business communications kept six years."""


class RetentionError(ValueError):
    """A retention setting or request that cannot be applied; the message says what to fix."""


def parse_duration(value: str | int | float, where: str = "duration") -> float:
    """`6y`, `18mo`, `90d`, `24h`, `30m` or seconds as a number."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    m = _DURATION.match(str(value))
    if not m:
        raise RetentionError(f"{where}: {value!r} is not a duration (e.g. 6y, 18mo, 90d, 24h, 30m)")
    return float(m.group(1)) * _UNIT[m.group(2)]


@dataclass(frozen=True)
class RetentionClass:
    name: str
    seconds: float
    channels: tuple[str, ...] = ()
    desks: tuple[str, ...] = ()


@dataclass(frozen=True)
class RetentionSettings:
    """`retention:` in config: a default period and named classes per desk or channel."""

    default: RetentionClass
    classes: tuple[RetentionClass, ...] = ()
    desk_of_channel: Mapping[str, str] = field(default_factory=dict)

    def for_channel(self, channel: str) -> RetentionClass:
        """The class for a conversation's client channel; the longest period when several match."""
        desk = self.desk_of_channel.get(channel)
        matches = [c for c in self.classes if channel in c.channels or (desk is not None and desk in c.desks)]
        return max(matches, key=lambda c: c.seconds) if matches else self.default


def retention_settings(raw: Mapping[str, Any] | None, desks: Mapping[str, Any] | None = None) -> RetentionSettings:
    raw = raw or {}
    default = RetentionClass("default", parse_duration(raw.get("default", DEFAULT_PERIOD), "retention.default"))
    classes = []
    for name, block in (raw.get("classes") or {}).items():
        classes.append(RetentionClass(name, parse_duration(block["period"], f"retention.classes.{name}.period"),
                                      tuple(block.get("channels") or ()), tuple(block.get("desks") or ())))
    desk_of: dict[str, str] = {}
    for dname, desk in (desks or {}).items():
        for ch in getattr(desk, "clients", None) or (desk.get("clients", ()) if isinstance(desk, dict) else ()):
            desk_of[ch] = dname
    return RetentionSettings(default, tuple(classes), desk_of)


HOLD_SCOPES = ("conversation", "client", "employee")


@dataclass(frozen=True)
class Hold:
    id: str
    scope: str
    value: str
    reason: str
    actor: str
    seq: int
    ts: float

    def covers(self, conversation: str, client: Mapping[str, Any] | None, employees: Iterable[str]) -> bool:
        if self.scope == "conversation":
            return conversation == self.value
        if self.scope == "client":
            return client_matches(self.value, client)
        return self.value in set(employees)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def active_holds(events: Iterable[Ev]) -> dict[str, Hold]:
    holds: dict[str, Hold] = {}
    for ev in events:
        if ev.kind == "hold.added":
            b = ev.body
            holds[str(b["hold_id"])] = Hold(str(b["hold_id"]), str(b["scope"]), str(b["value"]),
                                            str(b.get("reason", "")), str(b.get("actor", "")), ev.seq, ev.ts)
        elif ev.kind == "hold.released":
            holds.pop(str(ev.body.get("hold_id")), None)
    return holds


def restricted_clients(events: Iterable[Ev]) -> dict[str, int]:
    """`channel:user` → seq of the (latest) erasure request: content before it is restricted."""
    out: dict[str, int] = {}
    for ev in events:
        if ev.kind == "erasure.requested":
            out[str(ev.body["client"])] = ev.seq
    return out


async def load_state(reader: Reader) -> tuple[dict[str, Hold], dict[str, int]]:
    evs = await iter_events(reader, ("hold.added", "hold.released", "erasure.requested"))
    return active_holds(evs), restricted_clients(evs)


def hold_event(scope: str, value: str, reason: str, actor: str) -> dict[str, Any]:
    if scope not in HOLD_SCOPES:
        raise RetentionError(f"a hold covers a conversation, a client or an employee, not {scope!r}")
    if not value:
        raise RetentionError(f"say which {scope} the hold covers")
    if not reason.strip():
        raise RetentionError("a legal hold needs a --reason (the matter it preserves evidence for)")
    return {"hold_id": "h-" + uuid.uuid4().hex[:12], "scope": scope, "value": value, "reason": reason, "actor": actor}


# --- erasure -------------------------------------------------------------------------------

_PARTY_PRIVATE = ("display",)
_ATTACHMENT_PRIVATE = ("name", "platform_ref")


def _scrub_party(p: Any) -> Any:
    if not isinstance(p, dict):
        return p
    return {k: v for k, v in p.items() if k not in _PARTY_PRIVATE}


def _scrub_attachments(atts: Any) -> list[Any]:
    return [{k: v for k, v in a.items() if k not in _ATTACHMENT_PRIVATE} if isinstance(a, dict) else a
            for a in atts or []]


def tombstone(kind: str, body: dict[str, Any], reason: str) -> dict[str, Any]:
    """The body with its content gone and its digests kept (ids, direction, sizes, sha256s)."""
    out = dict(body)
    if kind == "message.received":
        for key in ("text", "edits_platform", "reply_to_platform"):
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
    out["erased"] = {"reason": reason}
    return out


def body_digest(body: Any) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()).hexdigest()


def _blob_refs(body: dict[str, Any]) -> list[str]:
    refs = [body.get("raw_sha256")] + [a.get("sha256") for a in body.get("attachments") or [] if isinstance(a, dict)]
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

    def event_body(self, reason: str, actor: str) -> dict[str, Any]:
        return {"seqs": self.seqs, "blobs": self.blobs, "reason": reason, "actor": actor,
                "messages": self.messages, "digests": {str(s): body_digest(b) for s, b in self.tombstones.items()}}

    def summary(self) -> dict[str, Any]:
        return {"messages": len(self.messages), "events": len(self.seqs), "blobs": len(self.blobs),
                "held": {k: len(v) for k, v in self.held.items()}, "message_ids": self.messages}


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


def clients_of(events: Iterable[Ev]) -> set[str]:
    return {client_key(e.body.get("client")) for e in events if e.kind == "message.received"}


def now() -> float:
    return time.time()

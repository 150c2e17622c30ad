"""Retention classes, legal holds, data-subject erasure requests and the erasure plan.

Holds and erasure requests are journal events (`hold.added`, `hold.released`,
`erasure.requested`), so their state is derived from the chain like everything else. Erasure
never rewrites history silently: the content of an event is replaced by a tombstone that keeps
every digest, a `retention.erased` event records which seqs and blobs went and the digest of
each tombstone, and the journal verifier accepts exactly those tombstones.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import sqlite3
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from relay.evidence.collect import Ev, Reader, client_matches, iter_events

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




# --- applying (journal writes) -------------------------------------------------------------

def _touched(events: list[Ev], tombstones: Mapping[int, dict[str, Any]]) -> set[str]:
    """Conversations whose client display name an erasure of these events may change."""
    out: set[str] = set()
    for ev in events:
        if ev.seq not in tombstones:
            continue
        if ev.kind == "conversation.assigned":
            out.add(_assigned_conversation(ev))
        elif ev.kind == "message.received" and ev.conversation:
            out.add(ev.conversation)
    out.discard("")
    return out


def _rewrite_bodies(db_path: Path, events: list[Ev], tombstones: Mapping[int, dict[str, Any]]) -> list[str]:
    """Replace erased bodies (and the projections' copies) in one transaction. `events` is the
    journal as read before (the events appended since are read here): each conversation touched
    gets the client display name a replay now gives, none once every event naming it is erased.
    Returns those conversations."""
    from relay.journal.projections import client_displays  # here: `relay review --help` stays light

    kinds = {ev.seq: ev.kind for ev in events}
    touched = _touched(events, tombstones)
    db = sqlite3.connect(db_path, timeout=30, isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")
        for seq, body in tombstones.items():
            db.execute("UPDATE events SET body_json=? WHERE seq=?", (canonical(body), seq))
            if kinds.get(seq) == "message.received":
                db.execute("UPDATE messages SET text='', erased=1, attachments_json=?, sender_display=NULL WHERE seq=?",
                           (canonical(body.get("attachments") or []), seq))
                db.execute("DELETE FROM messages_fts WHERE rowid=?", (seq,))
            elif kinds.get(seq) == "delivery.queued":
                db.execute("UPDATE deliveries SET out_json=?, to_json=? WHERE delivery_id=?",
                           (canonical(body.get("out")), canonical(body.get("to")), body.get("delivery_id")))
        if touched:
            last = events[-1].seq if events else 0
            since = db.execute("SELECT kind, conversation, body_json FROM events WHERE seq > ? AND kind IN"
                               " ('message.received', 'conversation.assigned') ORDER BY seq", (last,)).fetchall()
            replay = [(ev.kind, ev.conversation, tombstones.get(ev.seq, ev.body)) for ev in events]
            replay += [(k, c, json.loads(b)) for k, c, b in since]
            for conv, display in client_displays(replay, touched).items():
                db.execute("UPDATE conversations SET client_display=? WHERE id=?", (display, conv))
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    finally:
        db.close()
    return sorted(touched)


def canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


async def _events(journal: Any) -> list[Ev]:
    return await iter_events(journal)


async def complete_pending(journal: Any) -> int:
    """Finish erasures whose `retention.erased` committed but whose bodies were not yet replaced
    (a crash in between); the tombstone is recomputed and must match the recorded digest."""
    events = await _events(journal)
    by_seq = {ev.seq: ev for ev in events}
    todo: dict[int, dict[str, Any]] = {}
    for ev in events:
        if ev.kind != "retention.erased":
            continue
        digests = ev.body.get("digests") or {}
        for s in ev.body.get("seqs") or []:
            target = by_seq.get(int(s))
            want = digests.get(str(s))
            if target is None or want is None or body_digest(target.body) == want:
                continue
            reason = str(ev.body.get("reason", ""))
            if reason == LEFTOVER_REASON:
                candidates = [_without_raw(target.body)]
            else:
                candidates = [tombstone(target.kind, target.body, reason),
                              _legacy_tombstone(target.kind, target.body, reason)]
            for stone in candidates:
                if body_digest(stone) == want:
                    todo[target.seq] = stone
                    break
    if todo:
        await asyncio.to_thread(_rewrite_bodies, journal.path, events, todo)
    return len(todo)


def _delete_blobs(journal: Any, shas: Iterable[str]) -> int:
    n = 0
    for sha in shas:
        try:
            journal.blobs.path(sha).unlink()
            n += 1
        except FileNotFoundError:
            pass
    return n


async def apply_plan(journal: Any, plan: ErasurePlan, reason: str, actor: str,
                     events: list[Ev] | None = None) -> dict[str, Any]:
    """Journal `retention.erased`, then replace the bodies and delete the blob bytes. `events`:
    the journal as the plan was made from (read here when not given)."""
    if not plan.seqs:
        return {"erased": plan.summary(), "seq": None}
    if events is None:
        events = await _events(journal)
    ev = await journal.append("retention.erased", plan.event_body(reason, actor))
    touched = await asyncio.to_thread(_rewrite_bodies, journal.path, events, plan.tombstones)
    deleted = await asyncio.to_thread(_delete_blobs, journal, plan.blobs)
    return {"erased": plan.summary(), "seq": ev.seq, "blobs_deleted": deleted, "touched": touched}


async def run_retention(journal: Any, settings: RetentionSettings, actor: str, *, at: float | None = None,
                        dry_run: bool = False) -> dict[str, Any]:
    """Erase everything past its retention class and on no legal hold (`at` = now)."""
    await complete_pending(journal)
    events = await _events(journal)
    leftovers = plan_leftovers(events)
    if leftovers.seqs and not dry_run:
        await apply_plan(journal, leftovers, LEFTOVER_REASON, actor, events)
        events = await _events(journal)
    holds = active_holds(events)
    plan = plan_erasure(events, settings, time.time() if at is None else at, holds)
    if dry_run:
        return {"dry_run": True, "would_erase": plan.summary(), "held_by": plan.held}
    result = await apply_plan(journal, plan, "retention period ended", actor, events)
    result["held_by"] = plan.held
    return result


async def _known(journal: Any, scope: str, value: str) -> bool:
    if scope == "conversation":
        rows = await journal.fetchall("SELECT 1 FROM conversations WHERE id=? LIMIT 1", (value,))
    elif scope == "client":
        if ":" in value:
            rows = await journal.fetchall("SELECT 1 FROM conversations WHERE client_channel || ':' || client_user = ? LIMIT 1", (value,))
        else:
            rows = await journal.fetchall("SELECT 1 FROM conversations WHERE client_user = ? LIMIT 1", (value,))
    else:
        rows = await journal.fetchall("SELECT 1 FROM messages WHERE employee=? OR sender_user=? LIMIT 1", (value, value))
    return bool(rows)


async def add_hold(journal: Any, scope: str, value: str, reason: str, actor: str,
                   employees: Iterable[str] = ()) -> dict[str, Any]:
    body = hold_event(scope, value, reason, actor)
    if not (scope == "employee" and value in set(employees)) and not await _known(journal, scope, value):
        raise RetentionError(f"no {scope} {value!r} in the journal")
    ev = await journal.append("hold.added", body)
    return {**body, "seq": ev.seq}


async def release_hold(journal: Any, hold_id: str, reason: str, actor: str) -> dict[str, Any]:
    holds, _ = await load_state(journal)
    if hold_id not in holds:
        raise RetentionError(f"no active legal hold {hold_id!r} (see: relay hold list)")
    if not reason.strip():
        raise RetentionError("releasing a legal hold needs a --reason")
    ev = await journal.append("hold.released", {"hold_id": hold_id, "reason": reason, "actor": actor,
                                                "scope": holds[hold_id].scope, "value": holds[hold_id].value})
    return {"hold_id": hold_id, "released": True, "seq": ev.seq}


async def request_erasure(journal: Any, client: str, reason: str, actor: str) -> dict[str, Any]:
    """A data-subject request: the client's content is restricted now and erased when its
    retention ends (a regulated firm may not erase it earlier)."""
    if ":" not in client:
        rows = await journal.fetchall("SELECT DISTINCT client_channel FROM conversations WHERE client_user=?", (client,))
        if len(rows) != 1:
            raise RetentionError(f"say which channel: --client CHANNEL:{client}" if rows else f"no client {client!r} in the journal")
        client = f"{rows[0][0]}:{client}"
    if not await _known(journal, "client", client):
        raise RetentionError(f"no client {client!r} in the journal")
    if not reason.strip():
        raise RetentionError("an erasure request needs a --reason (e.g. the request reference)")
    body = {"request_id": "e-" + uuid.uuid4().hex[:12], "client": client, "reason": reason, "actor": actor}
    ev = await journal.append("erasure.requested", body)
    return {**body, "seq": ev.seq, "restricted": True}


# --- admin actions (writes go through the running relay) ------------------------------------

def settings_of(app: Any) -> RetentionSettings:
    return retention_settings(app.config.raw.get("retention"), app.config.desks)


def _action_error(exc: Exception) -> Exception:
    from relay.admin import AdminError
    return AdminError(str(exc))


def _authorize(app: Any, actor: str) -> str:
    """Holds and erasure requests are for supervisors and admins (named under reviewers:)."""
    from relay.review import compliance_settings
    r = compliance_settings(app.config.raw).reviewer(actor)
    if r.role not in ("supervisor", "admin"):
        from relay.admin import AdminError
        raise AdminError(f"{actor} has role {r.role}; legal holds and erasure requests need a supervisor or admin")
    return r.id


def _register() -> None:
    from relay.admin import admin_action

    @admin_action("retention.run")
    async def _run(app: Any, params: dict[str, Any]) -> dict[str, Any]:
        at = params.get("at")
        try:
            result = await run_retention(app.journal, settings_of(app), str(params.get("actor") or "retention"),
                                         at=float(at) if at is not None else None, dry_run=bool(params.get("dry_run")))
        except RetentionError as exc:
            raise _action_error(exc) from exc
        app.router.forget(result.get("touched") or ())
        return result

    @admin_action("hold.add")
    async def _hold_add(app: Any, params: dict[str, Any]) -> dict[str, Any]:
        _authorize(app, str(params.get("actor", "")))
        try:
            return await add_hold(app.journal, str(params.get("scope", "")), str(params.get("value", "")),
                                  str(params.get("reason", "")), str(params.get("actor", "")), app.config.employees)
        except RetentionError as exc:
            raise _action_error(exc) from exc

    @admin_action("hold.release")
    async def _hold_release(app: Any, params: dict[str, Any]) -> dict[str, Any]:
        _authorize(app, str(params.get("actor", "")))
        try:
            return await release_hold(app.journal, str(params.get("hold_id", "")), str(params.get("reason", "")),
                                      str(params.get("actor", "")))
        except RetentionError as exc:
            raise _action_error(exc) from exc

    @admin_action("erase.request")
    async def _erase(app: Any, params: dict[str, Any]) -> dict[str, Any]:
        _authorize(app, str(params.get("actor", "")))
        try:
            return await request_erasure(app.journal, str(params.get("client", "")), str(params.get("reason", "")),
                                         str(params.get("actor", "")))
        except RetentionError as exc:
            raise _action_error(exc) from exc


_register()

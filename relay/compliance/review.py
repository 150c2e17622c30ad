"""Supervision (FINRA 3110): the review queue, reviewers' decisions, SLAs and alerts.

The queue is derived from the journal: every non-shadow `policy.verdict` with `review: true`
is an item, and every `review.decided` event is a decision on it, naming reviewer, item,
action, reason and time. Listing is not review; only a decision is.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

from relay.actions import AdminError
from relay.evidence.collect import Reader, is_restricted, iso
from relay.compliance.restricted import RESTRICTED_NOTE, withheld_body
from relay.compliance.holds import load_state
from relay.compliance.retention import RetentionError, parse_duration


log = logging.getLogger("relay.review")

ROLES = ("reviewer", "supervisor", "admin")
DECISIONS = ("release", "reject", "compliant", "non-compliant", "false-positive", "escalate", "annotate")
CLOSING = {"release": "released", "reject": "rejected", "compliant": "compliant",
           "non-compliant": "non-compliant", "false-positive": "false-positive"}
CLOSED = frozenset(CLOSING.values())
REASON_OPTIONAL = frozenset({"release", "compliant"})
SYSTEM_REVIEWER = "relay"
NOTIFY_NS = "compliance"
STALE_ALERT = 86400.0


class ReviewError(AdminError):
    """A decision that is not allowed (wrong role, wrong state, missing reason…)."""


@dataclass(frozen=True)
class Reviewer:
    id: str
    role: str
    name: str = ""
    password_hash: str = ""


@dataclass(frozen=True)
class ComplianceSettings:
    """`reviewers:` and `compliance:` from the config."""

    reviewers: Mapping[str, Reviewer] = field(default_factory=dict)
    alert_channel: str | None = None
    alert_to: str | None = None
    sla_quarantine: float | None = None
    sla_flag: float | None = None
    sla_rules: Mapping[str, float] = field(default_factory=dict)
    notify_rules: frozenset[str] = frozenset()
    sweep_seconds: float = 60.0

    def reviewer(self, who: str) -> Reviewer:
        if not who:
            raise ReviewError("say who decides: --as REVIEWER (a name under reviewers: in the config)")
        r = self.reviewers.get(who)
        if r is None:
            known = ", ".join(sorted(self.reviewers)) or "none configured"
            raise ReviewError(f"{who!r} is not a configured reviewer (reviewers: {known}); pass --as NAME")
        return r

    def require_admin(self, who: str) -> Reviewer:
        r = self.reviewer(who)
        if r.role != "admin":
            raise ReviewError(f"{who} has role {r.role}; only an admin may see restricted content")
        return r


def compliance_settings(raw: Mapping[str, Any]) -> ComplianceSettings:
    """Parse the `reviewers` and `compliance` sections of `Config.raw`."""
    reviewers = {rid: Reviewer(rid, str(b.get("role", "reviewer")), str(b.get("name", rid)), str(b.get("password_hash", "")))
                 for rid, b in (raw.get("reviewers") or {}).items()}
    comp = raw.get("compliance") or {}
    alerts = comp.get("alerts") or {}
    sla = comp.get("sla") or {}
    try:
        rules = {k: parse_duration(v, f"compliance.sla.rules.{k}") for k, v in (sla.get("rules") or {}).items()}
        q = parse_duration(sla["quarantine"], "compliance.sla.quarantine") if sla.get("quarantine") is not None else None
        f = parse_duration(sla["flag"], "compliance.sla.flag") if sla.get("flag") is not None else None
        sweep = parse_duration(comp.get("sweep", 60), "compliance.sweep")
    except RetentionError as exc:
        raise ReviewError(str(exc)) from exc
    return ComplianceSettings(reviewers, alerts.get("channel"), None if alerts.get("to") is None else str(alerts["to"]),
                              q, f, rules, frozenset(comp.get("notify") or ()), sweep)


def settings_of(app: Any) -> ComplianceSettings:
    return compliance_settings(app.config.raw)


@dataclass
class ReviewItem:
    """A message in the review queue with its verdict, matched rules and spans, and decisions."""

    message_id: str
    seq: int
    ts: float
    conversation: str
    action: str
    rules: list[dict[str, Any]]
    message: dict[str, Any] = field(default_factory=dict)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    message_seq: int = 0
    restricted: bool = False
    """Under a data-subject erasure request (`withhold_restricted`): the summary keeps the item
    (it may still need a decision) but not what the message said or who by name."""

    @property
    def state(self) -> str:
        state = "open"
        for d in self.decisions:
            dec = d.get("decision")
            if dec in CLOSING:
                state = CLOSING[dec]
            elif dec == "escalate" and state == "open":
                state = "escalated"
        return state

    @property
    def is_open(self) -> bool:
        return self.state not in CLOSED

    @property
    def sampled(self) -> bool:
        return self.action not in ("flag", "quarantine") or any(r.get("sampled") for r in self.rules)

    @property
    def sla_breached(self) -> bool:
        return any(d.get("sla_breach") for d in self.decisions)

    def rule_ids(self) -> list[str]:
        return [str(r.get("rule")) for r in self.rules]

    def sla(self, settings: ComplianceSettings, policies: Any = None) -> float | None:
        """The tightest SLA among the item's rules (rule `sla:`, then config), else the default."""
        found: list[float] = []
        for rid in self.rule_ids():
            val: Any = None
            if policies is not None:
                try:
                    val = getattr(policies.rule(rid), "sla", None)
                except KeyError:
                    val = None
            if val:
                found.append(val if isinstance(val, (int, float)) else parse_duration(val))
            elif rid in settings.sla_rules:
                found.append(settings.sla_rules[rid])
        if found:
            return min(found)
        return settings.sla_quarantine if self.action == "quarantine" else settings.sla_flag

    def summary(self, now: float, settings: ComplianceSettings | None = None, policies: Any = None) -> dict[str, Any]:
        m = withheld_body("message.received", self.message) if self.restricted else self.message
        text = str(m.get("text") or "")
        out = {
            "message_id": self.message_id, "seq": self.seq, "time": iso(self.ts), "age_seconds": round(now - self.ts, 1),
            "conversation": self.conversation, "action": self.action, "state": self.state,
            "rules": [{"rule": r.get("rule"), "action": r.get("action"), "severity": r.get("severity"),
                       "title": r.get("title", ""), "spans": r.get("spans", []),
                       "matched": [text[s:e] for s, e in r.get("spans", []) if 0 <= s <= e <= len(text)],
                       "sampled": bool(r.get("sampled"))} for r in self.rules],
            "direction": m.get("direction"), "channel": m.get("channel"),
            "sender": m.get("sender"), "client": m.get("client"), "employee": m.get("employee"),
            "text": text, "erased": "erased" in m, "sampled": self.sampled,
            "decisions": self.decisions, "sla_breached": self.sla_breached,
        }
        if self.restricted:
            out["restricted"] = RESTRICTED_NOTE
        if settings is not None:
            sla = self.sla(settings, policies)
            out["sla_seconds"] = sla
            out["sla_due"] = iso(self.ts + sla) if sla else None
        return out


async def load_items(reader: Reader, message_id: str | None = None, pending: bool = False) -> dict[str, ReviewItem]:
    """The review queue, read through its projections (`message_id` limits it to one item,
    `pending` to the items no decision has closed: a superset of the open ones, bounded by the
    reviewers' backlog rather than by the journal's length)."""
    from relay.journal import lookups  # here: `relay review --help` must not load the journal

    where = lookups.REVIEW_WHERE["one" if message_id else "pending" if pending else "all"]
    params: tuple[Any, ...] = (message_id,) if message_id else ()
    items: dict[str, ReviewItem] = {}
    for r in await reader.fetchall(lookups.REVIEW_VERDICTS.format(where=where), params):
        b = json.loads(r["body_json"])
        mid = str(b.get("message_id"))
        items[mid] = ReviewItem(mid, int(r["seq"]), float(r["ts"]), r["conversation"] or "", str(b.get("action")),
                                list(b.get("rules") or []))
    if not items:
        return items
    for r in await reader.fetchall(lookups.REVIEW_MESSAGES.format(where=where), params):
        b = json.loads(r["body_json"])
        item = items.get(str(b.get("id")))
        if item is not None:
            item.message, item.message_seq = b, int(r["seq"])
    for r in await reader.fetchall(lookups.REVIEW_DECISIONS.format(where=where), params):
        b = json.loads(r["body_json"])
        item = items.get(str(b.get("message_id")))
        if item is not None:
            item.decisions.append({**b, "seq": int(r["seq"]), "time": iso(float(r["ts"])), "ts": float(r["ts"])})
    return items


async def withhold_restricted(reader: Reader, items: Mapping[str, ReviewItem]) -> int:
    """Mark the items whose message is under a data-subject erasure request (the rule search,
    export and `relay journal show` use); returns how many."""
    _, restricted = await load_state(reader)
    n = 0
    for item in items.values():
        item.restricted = is_restricted(item.message_seq, item.message.get("client"), restricted)
        n += item.restricted
    return n


def check_decision(item: ReviewItem, decision: str, reviewer: Reviewer, reason: str) -> None:
    """Raise ReviewError unless `reviewer` may take `decision` on `item` now."""
    if decision not in DECISIONS:
        raise ReviewError(f"unknown decision {decision!r} (choose from {', '.join(DECISIONS)})")
    if reviewer.role not in ROLES:
        raise ReviewError(f"{reviewer.id} has unknown role {reviewer.role!r}")
    if decision not in REASON_OPTIONAL and not reason.strip():
        raise ReviewError(f"a {decision} decision needs a --reason")
    state = item.state
    if decision == "annotate":
        return
    if state in CLOSED:
        last = next((d for d in reversed(item.decisions) if d.get("decision") in CLOSING), {})
        raise ReviewError(f"{item.message_id} is already decided: {last.get('decision')} by {last.get('reviewer')}"
                          f" at {last.get('time')} (only annotate is possible)")
    if state == "escalated" and reviewer.role == "reviewer":
        raise ReviewError(f"{item.message_id} is escalated to supervisors; {reviewer.id} is a reviewer")
    if decision == "escalate" and state == "escalated":
        raise ReviewError(f"{item.message_id} is already escalated")
    if decision in ("release", "reject") and item.action != "quarantine":
        raise ReviewError(f"{item.message_id} was not held (verdict {item.action}): release and reject are for"
                          " quarantined messages; use compliant, non-compliant or false-positive")
    if decision in ("compliant", "non-compliant", "false-positive") and item.action == "quarantine":
        raise ReviewError(f"{item.message_id} is quarantined: release it (delivered) or reject it (not delivered) first")


async def alert(app: Any, text: str, key: str, conversation: str | None = None) -> bool:
    """Send `text` to the configured compliance channel (journaled by the hub); False when none is set."""
    s = settings_of(app)
    if not s.alert_channel or s.alert_to is None:
        log.warning("compliance alert %s not sent: no compliance.alerts configured", key)
        return False
    await app.hub.notify(s.alert_channel, s.alert_to, text, conversation=conversation, key=key)
    return True


async def decide(app: Any, message_id: str, decision: str, who: str, reason: str = "") -> dict[str, Any]:
    s = settings_of(app)
    reviewer = s.reviewer(who)
    items = await load_items(app.journal, message_id)
    item = items.get(message_id)
    if item is None:
        raise ReviewError(f"no review item {message_id!r} (see: relay review list)")
    check_decision(item, decision, reviewer, reason)
    if decision == "release":
        try:
            await app.hub.release(message_id, reviewer.id, reason)
        except LookupError as exc:
            raise ReviewError(str(exc)) from exc
    elif decision == "reject":
        try:
            await app.hub.reject(message_id, reviewer.id, reason)
        except LookupError as exc:
            raise ReviewError(str(exc)) from exc
    else:
        await app.journal.append("review.decided", {"message_id": message_id, "decision": decision,
                                                    "reviewer": reviewer.id, "reason": reason, "role": reviewer.role},
                                 item.conversation or None)
        if decision == "escalate":
            await alert(app, f"[relay review] {message_id} escalated to supervisors by {reviewer.id}: {reason}"
                        f" (rules {', '.join(item.rule_ids())})", f"escalate:{message_id}", None)
    after = (await load_items(app.journal, message_id))[message_id]
    return {"message_id": message_id, "decision": decision, "reviewer": reviewer.id, "role": reviewer.role,
            "reason": reason, "state": after.state, "seq": after.decisions[-1]["seq"], "time": after.decisions[-1]["time"]}


def stats(items: Mapping[str, ReviewItem], now: float, settings: ComplianceSettings, policies: Any = None) -> dict[str, Any]:
    """Open items by rule and age, SLA breaches, decisions per reviewer."""
    buckets = (("<1h", 3600), ("1h-24h", 86400), ("1d-7d", 7 * 86400), (">7d", float("inf")))
    by_rule: dict[str, dict[str, int]] = {}
    breaches: list[dict[str, Any]] = []
    per_reviewer: dict[str, dict[str, int]] = {}
    open_n = 0
    for item in items.values():
        for d in item.decisions:
            per_reviewer.setdefault(str(d.get("reviewer")), {}).setdefault(str(d.get("decision")), 0)
            per_reviewer[str(d.get("reviewer"))][str(d.get("decision"))] += 1
        sla = item.sla(settings, policies)
        overdue = sla is not None and item.is_open and now - item.ts > sla
        if item.sla_breached or overdue:
            breaches.append({"message_id": item.message_id, "rules": item.rule_ids(), "sla_seconds": sla,
                             "state": item.state, "age_seconds": round(now - item.ts, 1)})
        if not item.is_open:
            continue
        open_n += 1
        age = now - item.ts
        label = next(name for name, limit in buckets if age < limit)
        for rid in item.rule_ids() or ["(none)"]:
            row = by_rule.setdefault(rid, {name: 0 for name, _ in buckets} | {"total": 0})
            row[label] += 1
            row["total"] += 1
    return {"open": open_n, "open_by_rule": by_rule, "sla_breaches": breaches,
            "decisions_per_reviewer": per_reviewer, "items": len(items)}


async def sweep(app: Any, now: float | None = None) -> dict[str, Any]:
    """Escalate and alert on SLA breaches; alert on verdicts of `notify` rules. Idempotent."""
    lock = getattr(app, "_review_sweep_lock", None)
    if lock is None:
        lock = app._review_sweep_lock = asyncio.Lock()
    async with lock:
        return await _sweep(app, now)


async def _sweep(app: Any, now: float | None) -> dict[str, Any]:
    s = settings_of(app)
    now = time.time() if now is None else now
    policies = getattr(app, "policies", None)
    breached: list[str] = []
    for item in (await load_items(app.journal, pending=True)).values():
        sla = item.sla(s, policies)
        if sla is None or not item.is_open or item.sla_breached or now - item.ts <= sla:
            continue
        hours = sla / 3600
        reason = f"review SLA of {hours:g}h breached (queued {iso(item.ts)})"
        await app.journal.append("review.decided", {"message_id": item.message_id, "decision": "escalate",
                                                    "reviewer": SYSTEM_REVIEWER, "reason": reason, "sla_breach": True},
                                 item.conversation or None)
        await alert(app, f"[relay review] SLA breach: {item.message_id} ({item.action}, rules {', '.join(item.rule_ids())})"
                    f" in conversation {item.conversation} is still {item.state} after {hours:g}h; escalated to supervisors",
                    f"sla:{item.message_id}")
        breached.append(item.message_id)
    notified = await _notify_new_verdicts(app, s, policies, now)
    return {"sla_breaches": breached, "notified": notified}


async def _notify_new_verdicts(app: Any, s: ComplianceSettings, policies: Any, now: float) -> list[str]:
    """Alert on verdicts of `notify` rules since the last sweep; verdicts older than a day (e.g.
    a long history when the feature is first enabled) only move the cursor."""
    cursor = int(await app.journal.kv_get(NOTIFY_NS, "notify_seq") or 0)
    rows = await app.journal.fetchall(
        "SELECT seq, ts, conversation, body_json FROM events WHERE kind = 'policy.verdict' AND seq > ?"
        " AND json_extract(body_json, '$.shadow') IS NULL ORDER BY seq", (cursor,))
    sent: list[str] = []
    last = cursor
    for r in rows:
        last = int(r["seq"])
        if float(r["ts"]) < now - STALE_ALERT:
            continue
        b = json.loads(r["body_json"])
        hits = [h for h in b.get("rules") or [] if _notify(str(h.get("rule")), s, policies)]
        if not hits:
            continue
        mid = str(b.get("message_id"))
        text = (f"[relay alert] {', '.join(str(h.get('rule')) + ' ' + str(h.get('title') or h.get('action')) for h in hits)}:"
                f" message {mid} in conversation {r['conversation']} was {b.get('action')}")
        await alert(app, text, f"notify:{mid}")
        sent.append(mid)
    if last != cursor:
        await app.journal.kv_put(NOTIFY_NS, "notify_seq", str(last))
    return sent


def _notify(rule: str, s: ComplianceSettings, policies: Any) -> bool:
    if rule in s.notify_rules:
        return True
    if policies is None:
        return False
    try:
        return bool(getattr(policies.rule(rule), "notify", False))
    except KeyError:
        return False


async def run_sweeper(app: Any) -> None:
    """Background task for `relay run`: sweep every `compliance.sweep` seconds."""
    while True:
        try:
            await sweep(app)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("compliance sweep failed")
        await asyncio.sleep(settings_of(app).sweep_seconds)


# --- admin actions (writes go through the running relay) ------------------------------------

async def decide_action(app: Any, params: dict[str, Any]) -> dict[str, Any]:
    return await decide(app, str(params.get("message_id", "")), str(params.get("decision", "")),
                        str(params.get("reviewer", "")), str(params.get("reason", "") or ""))


async def sweep_action(app: Any, params: dict[str, Any]) -> dict[str, Any]:
    at = params.get("at")
    return await sweep(app, float(at) if at is not None else None)

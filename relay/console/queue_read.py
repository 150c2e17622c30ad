"""The review queue read from the projections (`review_queue` ⋈ `messages` ⋈ `conversations`),
never from `events`: filters, sort and paging run in SQLite on the queue's own indexes, so a page
costs about the same with 100 or 10,000 open items."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Mapping

from relay.evidence.collect import iso
from relay.journal import canonical_json
from relay.compliance.retention import RetentionError, parse_duration

STATES = ("open", "escalated", "closed", "all")
SORTS = ("newest", "oldest", "due")
PAGE_SIZE = 50
COUNT_CAP = 1000
_STATE_SQL = {"open": "rq.state = 'open'", "escalated": "rq.state = 'escalated'", "closed": "rq.state = 'decided'",
              "all": "1"}
CLOSED_STATE = {"release": "released", "reject": "rejected", "compliant": "compliant",
                "non-compliant": "non-compliant", "false-positive": "false-positive"}


class QueueFilterError(ValueError):
    """A filter value the user can correct (the message says which and how)."""


@dataclass(frozen=True)
class QueueQuery:
    state: str = "open"
    rule: str = ""
    channel: str = ""
    desk: str = ""
    employee: str = ""
    older: str = ""
    newer: str = ""
    breached: bool = False
    sort: str = "newest"
    page: int = 1

    @classmethod
    def from_params(cls, p: Mapping[str, str]) -> "QueueQuery":
        def clip(name: str) -> str:
            return str(p.get(name, "") or "").strip()[:200]
        try:
            page = max(1, min(100_000, int(p.get("page", "1") or 1)))
        except ValueError:
            raise QueueFilterError("page must be a whole number") from None
        q = cls(state=clip("state") or "open", rule=clip("rule"), channel=clip("channel"), desk=clip("desk"),
                employee=clip("employee"), older=clip("older"), newer=clip("newer"),
                breached=p.get("breached") in ("1", "on", "true"), sort=clip("sort") or "newest", page=page)
        if q.state not in STATES:
            raise QueueFilterError(f"state must be one of {', '.join(STATES)}")
        if q.sort not in SORTS:
            raise QueueFilterError(f"sort must be one of {', '.join(SORTS)}")
        return q

    def params(self, **change: Any) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in ("state", "rule", "channel", "desk", "employee", "older", "newer", "sort", "page")}
        out["breached"] = "1" if self.breached else ""
        out.update(change)
        return out


def sla_inputs(settings: Any, policies: Any) -> tuple[str, float | None, float | None]:
    """(JSON of rule → SLA seconds, quarantine default, flag default) as `ReviewItem.sla` reads them:
    a rule's own `sla:` wins over the config's `compliance.sla.rules`."""
    per_rule: dict[str, float] = dict(settings.sla_rules)
    for rule in getattr(policies, "rules", ()) or ():
        if getattr(rule, "sla", None):
            per_rule[rule.id] = float(rule.sla)
    return json.dumps(per_rule), settings.sla_quarantine, settings.sla_flag


def due_sql(q_default: float | None, f_default: float | None) -> str:
    """SQL for an item's SLA due time (epoch seconds, NULL when no SLA applies); one `?` (the rule map)."""
    fallback = (f"CASE WHEN rq.action = 'quarantine' THEN {_num(q_default)} ELSE {_num(f_default)} END")
    return ("(m.ts + COALESCE((SELECT MIN(s.value) FROM json_each(COALESCE(rq.rules_json, '[]')) r"
            " JOIN json_each(?) s ON s.key = json_extract(r.value, '$.rule')), " + fallback + "))")


def _num(v: float | None) -> str:
    return "NULL" if v is None else repr(float(v))


def _duration(text: str, name: str) -> float:
    try:
        return parse_duration(text, name)
    except RetentionError as exc:
        raise QueueFilterError(f"{name}: {exc} (e.g. 30m, 4h, 2d)") from None


def build(q: QueueQuery, config: Any, sla: tuple[str, float | None, float | None], now: float) -> tuple[str, list[Any], str, list[Any]]:
    """(page SQL, its params, count SQL, its params) for `q`."""
    rule_map, q_default, f_default = sla
    due = due_sql(q_default, f_default)
    where = [_STATE_SQL[q.state]]
    params: list[Any] = []
    if q.rule:
        # `rules_json` is canonical JSON (no spaces, quotes inside strings escaped), so the text
        # `"rule":"ID"` occurs exactly when a hit's key `rule` is ID: no JSON parse per row.
        where.append("instr(rq.rules_json, ?) > 0")
        params.append('"rule":' + canonical_json(q.rule))
    own = len(where)  # conditions on the queue's own columns; the rest need the message
    if q.channel:
        where.append("(m.channel = ? OR c.client_channel = ?)")
        params += [q.channel, q.channel]
    if q.desk:
        desk = config.desks.get(q.desk)
        if desk is None:
            raise QueueFilterError(f"no desk {q.desk!r} (desks: {', '.join(sorted(config.desks)) or 'none'})")
        clients, members = list(desk.clients), list(desk.members)
        where.append(f"(c.client_channel IN ({','.join('?' * len(clients))}) OR m.employee IN ({','.join('?' * len(members))}))")
        params += clients + members
    if q.employee:
        where.append("(m.employee = ? OR (m.direction = 'outbound' AND m.sender_user = ?))")
        params += [q.employee, q.employee]
    if q.older:
        where.append("m.ts <= ?")
        params.append(now - _duration(q.older, "older than"))
    if q.newer:
        where.append("m.ts >= ?")
        params.append(now - _duration(q.newer, "newer than"))
    if q.breached:
        where.append(f"((rq.state IN ('open', 'escalated') AND {due} < ?) OR (rq.decided_by = 'relay' AND rq.decision = 'escalate'))")
        params += [rule_map, now]
    joins = ("FROM review_queue rq JOIN messages m ON m.id = rq.message_id"
             " LEFT JOIN conversations c ON c.id = rq.conversation")
    cond = " WHERE " + " AND ".join(where)
    if len(where) == 1:  # the state alone: its partial index counts exactly
        count_sql = f"SELECT COUNT(*) AS n FROM review_queue rq{cond}"
    else:  # a filter's count stops at COUNT_CAP (the page says "more than"; the dashboard has totals)
        source = "FROM review_queue rq" if len(where) == own else joins
        count_sql = f"SELECT COUNT(*) AS n FROM (SELECT 1 {source}{cond} LIMIT {COUNT_CAP + 1})"
    order = {"newest": "rq.seq DESC", "oldest": "rq.seq ASC", "due": "due IS NULL, due ASC, rq.seq ASC"}[q.sort]
    sql = ("SELECT rq.message_id, rq.seq, rq.conversation, rq.action, rq.rules_json, rq.state, rq.decided_by,"
           " rq.decision, m.seq AS mseq, m.ts, m.channel, m.direction, m.employee, m.text, m.sender_user,"
           f" m.sender_display, m.erased, c.client_channel, c.client_user, c.client_display, {due} AS due "
           f"{joins}{cond} ORDER BY {order} LIMIT ? OFFSET ?")
    page_params = [rule_map, *params, PAGE_SIZE, (q.page - 1) * PAGE_SIZE]
    return sql, page_params, count_sql, list(params)


def state_label(row: Mapping[str, Any]) -> str:
    if row["state"] == "decided":
        return CLOSED_STATE.get(str(row["decision"]), str(row["decision"]))
    return str(row["state"])


def item_dict(row: Mapping[str, Any], restricted: bool, now: float) -> dict[str, Any]:
    """One queue row for the page or the live feed; a restricted message keeps no text or name."""
    rules = [r for r in json.loads(row["rules_json"] or "[]") if isinstance(r, dict)]
    due = row["due"]
    open_ = row["state"] in ("open", "escalated")
    return {
        "message_id": row["message_id"], "seq": row["seq"], "conversation": row["conversation"],
        "action": row["action"], "state": state_label(row), "decided_by": row["decided_by"],
        "time": iso(row["ts"]), "age_seconds": round(now - float(row["ts"]), 1), "channel": row["channel"],
        "direction": row["direction"], "employee": row["employee"],
        "client": None if restricted else row["client_display"] or row["client_user"],
        "text": "" if restricted else str(row["text"] or "")[:200],
        "restricted": restricted, "erased": bool(row["erased"]),
        "rules": [{"rule": r.get("rule"), "title": r.get("title", "")} for r in rules],
        "due": iso(due) if due is not None else None,
        "breached": bool(open_ and due is not None and due < now)
                    or (row["decided_by"] == "relay" and row["decision"] == "escalate"),
    }


async def fetch(console: Any, q: QueueQuery, now: float | None = None) -> tuple[list[dict[str, Any]], int]:
    now = time.time() if now is None else now
    relay = console.relay
    sla = sla_inputs(console.settings, relay.policies)
    sql, params, count_sql, count_params = build(q, relay.config, sla, now)
    restricted = await console.restricted()
    rows = await relay.journal.fetchall(sql, tuple(params))
    total = (await relay.journal.fetchall(count_sql, tuple(count_params)))[0]["n"]
    items = [item_dict(r, console.is_restricted(int(r["mseq"]), r["client_channel"], r["client_user"], restricted), now)
             for r in rows]
    return items, int(total)


async def since(console: Any, after_seq: int, now: float | None = None, limit: int = 200) -> list[dict[str, Any]]:
    """Open items whose verdict came after `after_seq` (the live feed), oldest first."""
    now = time.time() if now is None else now
    relay = console.relay
    rule_map, q_default, f_default = sla_inputs(console.settings, relay.policies)
    sql = ("SELECT rq.message_id, rq.seq, rq.conversation, rq.action, rq.rules_json, rq.state, rq.decided_by,"
           " rq.decision, m.seq AS mseq, m.ts, m.channel, m.direction, m.employee, m.text, m.sender_user,"
           f" m.sender_display, m.erased, c.client_channel, c.client_user, c.client_display, {due_sql(q_default, f_default)} AS due"
           " FROM review_queue rq JOIN messages m ON m.id = rq.message_id LEFT JOIN conversations c ON c.id = rq.conversation"
           " WHERE rq.state = 'open' AND rq.seq > ? ORDER BY rq.seq LIMIT ?")
    rows = await relay.journal.fetchall(sql, (rule_map, after_seq, limit))
    restricted = await console.restricted()
    return [item_dict(r, console.is_restricted(int(r["mseq"]), r["client_channel"], r["client_user"], restricted), now)
            for r in rows]

"""`relay journal search`: full-text search over the FTS5 trigram index with filters.

The trigram tokenizer indexes every three-character window, so Chinese and Japanese text
(no spaces between words) is found by substring; terms shorter than three characters fall
back to a substring scan, which still finds two-character CJK words.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping

from relay.evidence.collect import Reader, iso


@dataclass(frozen=True)
class SearchQuery:
    text: str = ""
    channel: str | None = None
    employee: str | None = None
    client: str | None = None
    direction: str | None = None
    action: str | None = None
    rule: str | None = None
    conversation: str | None = None
    since: float | None = None
    until: float | None = None
    limit: int = 50


def _like(term: str) -> str:
    return "%" + term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def build_sql(q: SearchQuery, restricted: Mapping[str, int], include_restricted: bool,
              dialect: str = "sqlite") -> tuple[str, list[Any]]:
    """The SELECT for `q`: FTS5 MATCH when every term has 3+ characters, else LIKE. On PostgreSQL
    (`dialect`) each term is an ILIKE, which the pg_trgm index on `messages.text` answers."""
    where: list[str] = []
    params: list[Any] = []
    join = ""
    terms = q.text.split()
    pg = dialect == "postgresql"
    if pg:
        for t in terms:
            where.append("m.text ILIKE ? ESCAPE '\\'")
            params.append(_like(t))
    elif terms and all(len(t) >= 3 for t in terms):
        join = "JOIN messages_fts f ON f.rowid = m.rowid"
        where.append("messages_fts MATCH ?")
        params.append(" AND ".join('"' + t.replace('"', '""') + '"' for t in terms))
    else:
        for t in terms:  # on the index's copy of the text, which a NUL does not cut short
            where.append("m.rowid IN (SELECT rowid FROM messages_fts WHERE text LIKE ? ESCAPE '\\')")
            params.append(_like(t))
    if q.channel:
        where.append("(m.channel = ? OR c.client_channel = ?)")
        params += [q.channel, q.channel]
    if q.employee:
        where.append("(m.employee = ? OR (m.direction = 'outbound' AND m.sender_user = ?))")
        params += [q.employee, q.employee]
    if q.client:
        if ":" in q.client:
            where.append("(c.client_channel || ':' || c.client_user) = ?")
        else:
            where.append("c.client_user = ?")
        params.append(q.client)
    for col, val in (("m.direction", q.direction), ("m.action", q.action), ("m.conversation", q.conversation)):
        if val:
            where.append(f"{col} = ?")
            params.append(val)
    if q.rule and pg:
        where.append("EXISTS (SELECT 1 FROM jsonb_array_elements(COALESCE(m.rules_json, '[]')::jsonb) r WHERE r->>'rule' = ?)")
        params.append(q.rule)
    elif q.rule:
        where.append("EXISTS (SELECT 1 FROM json_each(COALESCE(m.rules_json, '[]')) r WHERE json_extract(r.value, '$.rule') = ?)")
        params.append(q.rule)
    if q.since is not None:
        where.append("m.ts >= ?")
        params.append(q.since)
    if q.until is not None:
        where.append("m.ts < ?")
        params.append(q.until)
    if restricted and not include_restricted:
        clauses = []
        for key, upto in restricted.items():
            clauses.append("((c.client_channel || ':' || c.client_user) = ? AND m.seq < ?)")
            params += [key, upto]
        where.append("NOT (" + " OR ".join(clauses) + ")")
    snip = "snippet(messages_fts, 0, '[', ']', '…', 16)" if join else "substr(m.text, 1, 80)"
    sql = ("SELECT m.id, m.seq, m.ts, m.conversation, m.direction, m.channel, m.sender_user, m.sender_display,"
           f" m.kind, m.text, m.action, m.rules_json, m.employee, m.erased, c.client_channel, c.client_user, {snip} AS snip"
           f" FROM messages m LEFT JOIN conversations c ON c.id = m.conversation {join}"
           + (" WHERE " + " AND ".join(where) if where else "")
           + " ORDER BY m.seq DESC LIMIT ?")
    params.append(max(1, int(q.limit)))
    return sql, params


async def search(reader: Reader, q: SearchQuery, restricted: Mapping[str, int] | None = None,
                 include_restricted: bool = False) -> list[dict[str, Any]]:
    sql, params = build_sql(q, restricted or {}, include_restricted, getattr(reader, "dialect", "sqlite"))
    rows = await reader.fetchall(sql, tuple(params))
    out = []
    for r in rows:
        rules = [h.get("rule") for h in json.loads(r["rules_json"] or "[]") if isinstance(h, dict)]
        out.append({
            "id": r["id"], "seq": r["seq"], "time": iso(r["ts"]), "conversation": r["conversation"],
            "direction": r["direction"], "channel": r["channel"],
            "sender": {"user": r["sender_user"], "display": r["sender_display"]}, "sender_user": r["sender_user"],
            "snip": r["snip"] or "",
            "client": f"{r['client_channel']}:{r['client_user']}" if r["client_user"] is not None else None,
            "employee": r["employee"], "kind": r["kind"], "text": r["text"], "action": r["action"],
            "rules": rules, "erased": bool(r["erased"]),
        })
    return out

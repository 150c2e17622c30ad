"""The Dashboard: open items by rule and age, SLA breaches, decisions per reviewer and messages
per channel per day, as server-drawn SVG charts with the numbers in tables beside them. All of
it is aggregated in SQLite from the projections."""

from __future__ import annotations

import time
from typing import Any
from datetime import datetime, timezone

from aiohttp import web

from relay.console.auth import Ctx, guarded
from relay.console.charts import bar_chart, stacked_columns
from relay.console.layout import e
from relay.console.queue_read import due_sql, sla_inputs

AGES = (("<1h", 3600), ("1h-24h", 86400), ("1d-7d", 7 * 86400), (">7d", None))
DAYS = 14


def _table(caption: str, head: tuple[str, ...], rows: list[tuple[object, ...]], ident: str) -> str:
    th = "".join(f"<th scope='col'>{e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table id='{ident}'><caption>{e(caption)}</caption><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def checks_table(relay: Any) -> str:
    """The record's own checks (journal verification, WORM copy, archive feed) as last reported."""
    checks = sorted(relay.health.checks.items()) if getattr(relay, "health", None) is not None else []
    if not checks:
        return "<h2>Record checks</h2><p id='record-checks'>No check has run yet.</p>"
    rows = "".join(f"<tr><th scope='row'>{e(name)}</th><td>{'passed' if c.ok else 'FAILED'}</td>"
                   f"<td>{e(time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(c.at)))}</td><td>{e(c.detail)}</td></tr>"
                   for name, c in checks)
    return ("<h2>Record checks</h2><table id='record-checks'><thead><tr><th>check</th><th>result</th><th>when</th>"
            f"<th>detail</th></tr></thead><tbody>{rows}</tbody></table>")


@guarded()
async def dashboard_page(request: web.Request, ctx: Ctx) -> web.StreamResponse:
    j = ctx.console.journal
    now = time.time()
    age_case = "CASE " + " ".join(f"WHEN m.ts > {now - limit!r} THEN '{name}'" for name, limit in AGES if limit) + " ELSE '>7d' END"
    by_rule = await j.fetchall(
        f"SELECT COALESCE(json_extract(r.value, '$.rule'), '(none)') AS rule, {age_case} AS age, COUNT(*) AS n"
        " FROM review_queue rq JOIN messages m ON m.id = rq.message_id, json_each(COALESCE(rq.rules_json, '[]')) r"
        " WHERE rq.state IN ('open', 'escalated') GROUP BY rule, age")
    rules: dict[str, dict[str, int]] = {}
    for r in by_rule:
        rules.setdefault(r["rule"], {name: 0 for name, _ in AGES})[r["age"]] += int(r["n"])
    rule_map, q, f = sla_inputs(ctx.console.settings, ctx.console.relay.policies)
    breaches = (await j.fetchall(
        f"SELECT COUNT(*) AS n FROM review_queue rq JOIN messages m ON m.id = rq.message_id WHERE"
        f" (rq.state IN ('open', 'escalated') AND {due_sql(q, f)} < ?) OR (rq.decided_by = 'relay' AND rq.decision = 'escalate')",
        (rule_map, now)))[0]["n"]
    open_n = (await j.fetchall("SELECT COUNT(*) AS n FROM review_queue WHERE state IN ('open', 'escalated')"))[0]["n"]
    reviewers = await j.fetchall("SELECT reviewer, decision, n FROM reviewer_decisions ORDER BY reviewer, decision")
    per_reviewer: dict[str, int] = {}
    for r in reviewers:
        per_reviewer[r["reviewer"]] = per_reviewer.get(r["reviewer"], 0) + int(r["n"])
    since = now - DAYS * 86400
    days = [datetime.fromtimestamp(since + 86400 * (i + 1), timezone.utc).strftime("%Y-%m-%d") for i in range(DAYS)]
    per_day = await j.fetchall(
        "SELECT channel, strftime('%Y-%m-%d', ts, 'unixepoch') AS day, COUNT(*) AS n FROM messages"
        " WHERE ts >= ? GROUP BY channel, day", (since,))
    series: dict[str, list[float]] = {}
    for r in per_day:
        if r["day"] in days:
            series.setdefault(r["channel"] or "?", [0.0] * DAYS)[days.index(r["day"])] += int(r["n"])
    body = (
        f"<p id='summary'><strong>{int(open_n)}</strong> open item(s); <strong id='breaches'>{int(breaches)}</strong>"
        " past their SLA or escalated by the SLA sweep.</p>"
        "<h2>Open items by rule</h2>"
        + bar_chart("Open items by rule", sorted(((k, float(sum(v.values()))) for k, v in rules.items()), key=lambda x: -x[1]))
        + _table("Open items by rule and age", ("Rule", *[a for a, _ in AGES], "Total"),
                 [(k, *[v[a] for a, _ in AGES], sum(v.values())) for k, v in sorted(rules.items())], "by-rule")
        + "<h2>Open items by age</h2>"
        + bar_chart("Open items by age", [(a, float(sum(v[a] for v in rules.values()))) for a, _ in AGES])
        + "<h2>Decisions per reviewer</h2><p class='hint'>Every decision journaled (<code>review.decided</code>), annotations and escalations included.</p>"
        + bar_chart("Decisions per reviewer", sorted(((k, float(v)) for k, v in per_reviewer.items()), key=lambda x: -x[1]))
        + _table("Decisions per reviewer", ("Reviewer", "Decision", "Decisions"),
                 [(r["reviewer"], r["decision"], r["n"]) for r in reviewers], "per-reviewer")
        + f"<h2>Messages per channel per day (last {DAYS} days, UTC)</h2>"
        + stacked_columns("Messages per channel per day", days, series)
        + _table("Messages per channel per day", ("Day", *series), [(d, *[int(s[i]) for s in series.values()])
                                                                     for i, d in enumerate(days)], "per-day"))
    return ctx.page("Dashboard", body + checks_table(ctx.console.relay), current="/console/dashboard")


def add_routes(r: web.UrlDispatcher) -> None:
    r.add_get("/console/dashboard", dashboard_page)

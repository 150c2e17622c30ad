"""The Queue page: open, escalated and closed items with filters, sort, paging and SLA due
times; a selection can be decided in bulk; new items arrive over server-sent events."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from relay.console.auth import Ctx, guarded
from relay.console.layout import e, options, url
from relay.console.queue_read import COUNT_CAP, PAGE_SIZE, SORTS, STATES, QueueFilterError, QueueQuery, fetch

DECISION_LABELS = (("", "choose…"), ("release", "release (deliver the held message)"),
                   ("reject", "reject (never deliver)"), ("compliant", "compliant"),
                   ("non-compliant", "non-compliant"), ("false-positive", "false positive"),
                   ("escalate", "escalate to supervisors"), ("annotate", "annotate (note only)"))


def row_html(item: dict[str, Any]) -> str:
    mid = item["message_id"]
    rules = ", ".join(f"<span title='{e(r['title'])}'>{e(r['rule'])}</span>" for r in item["rules"]) or "–"
    text = "<em class='withheld'>withheld: data-subject erasure request</em>" if item["restricted"] else e(item["text"])
    due = e(item["due"] or "–") + (" <strong class='breach'>SLA breached</strong>" if item["breached"] else "")
    return (
        f"<tr data-message-id='{e(mid)}' data-seq='{int(item['seq'])}' class='state-{e(item['state'])}'>"
        f"<td><input type='checkbox' name='mid' value='{e(mid)}' aria-label='select {e(mid)}'></td>"
        f"<td><a class='open-item' href='/console/item/{e(mid)}'>{e(mid)}</a></td>"
        f"<td>{e(item['time'])}</td><td>{e(item['state'])}</td><td class='v-{e(item['action'])}'>{e(item['action'])}</td>"
        f"<td>{rules}</td><td>{e(item['channel'])}</td><td>{e(item['employee'] or '–')}</td>"
        f"<td>{due}</td><td class='excerpt'>{text}</td></tr>")


def filters_form(q: QueueQuery, config: Any) -> str:
    desks = [("", "any")] + [(d, d) for d in sorted(config.desks)]
    channels = [("", "any")] + [(c, c) for c in sorted(config.channels)]
    employees = [("", "any")] + [(x, x) for x in sorted(config.employees)]
    return (
        "<form method='get' action='/console/queue' class='filters' id='filters'>"
        f"<label>State <select id='f-state' name='state'>{options([(s, s) for s in STATES], q.state)}</select></label>"
        f"<label>Rule <input id='f-rule' name='rule' value='{e(q.rule)}' size='10'></label>"
        f"<label>Channel <select id='f-channel' name='channel'>{options(channels, q.channel)}</select></label>"
        f"<label>Desk <select id='f-desk' name='desk'>{options(desks, q.desk)}</select></label>"
        f"<label>Employee <select id='f-employee' name='employee'>{options(employees, q.employee)}</select></label>"
        f"<label>Older than <input id='f-older' name='older' value='{e(q.older)}' size='5' placeholder='4h'></label>"
        f"<label>Newer than <input id='f-newer' name='newer' value='{e(q.newer)}' size='5' placeholder='7d'></label>"
        f"<label><input type='checkbox' id='f-breached' name='breached' value='1'{' checked' if q.breached else ''}>"
        " SLA breached</label>"
        f"<label>Sort <select id='f-sort' name='sort'>{options([(s, s) for s in SORTS], q.sort)}</select></label>"
        "<button type='submit' id='f-apply'>Filter</button> <a href='/console/queue'>Clear</a></form>")


@guarded()
async def queue_page(request: web.Request, ctx: Ctx) -> web.StreamResponse:
    config = ctx.console.relay.config
    try:
        q = QueueQuery.from_params(request.query)
        items, total = await fetch(ctx.console, q)
    except QueueFilterError as exc:
        q = QueueQuery()
        return ctx.page("Review queue", filters_form(q, config), error=str(exc), status=400, current="/console/queue")
    capped = total > COUNT_CAP
    pages = max(1, -(-total // PAGE_SIZE))
    nav = []
    if q.page > 1:
        nav.append(f"<a rel='prev' href='{e(url('/console/queue', **q.params(page=q.page - 1)))}'>← newer page</a>"
                   if q.sort == "newest" else f"<a rel='prev' href='{e(url('/console/queue', **q.params(page=q.page - 1)))}'>← previous</a>")
    if q.page < pages:
        nav.append(f"<a rel='next' id='next-page' href='{e(url('/console/queue', **q.params(page=q.page + 1)))}'>next page →</a>")
    live = q == QueueQuery(state="open", page=1) or q == QueueQuery()
    rows = "".join(row_html(i) for i in items) or "<tr class='empty'><td colspan='10'>No items match.</td></tr>"
    body = (
        filters_form(q, config)
        + f"<p id='count' role='status'>{f'more than {COUNT_CAP:,}' if capped else total} item(s); page {q.page} of"
          f" {'many' if capped else pages}{' (totals per rule: Dashboard)' if capped else ''}. <span id='live-note'"
          f" data-live='{'prepend' if live else 'notice'}' data-after='{max([i['seq'] for i in items], default=0)}'></span></p>"
        + "<form method='post' action='/console/bulk' id='bulk'>" + ctx.csrf_field
        + "<table class='queue'><caption>Review items (select with x, open with o)</caption><thead><tr>"
          "<th scope='col'><span class='sr'>select</span></th><th scope='col'>Item</th><th scope='col'>Queued (UTC)</th>"
          "<th scope='col'>State</th><th scope='col'>Verdict</th><th scope='col'>Rules</th><th scope='col'>Channel</th>"
          "<th scope='col'>Employee</th><th scope='col'>SLA due</th><th scope='col'>Message</th></tr></thead>"
        + f"<tbody id='queue-rows'>{rows}</tbody></table>"
        + f"<nav class='pager' aria-label='pages'>{' '.join(nav)}</nav>"
        + "<fieldset><legend>Decide the selected items (one decision each)</legend>"
          f"<label>Decision <select name='decision' id='bulk-decision'>{options(DECISION_LABELS, '')}</select></label> "
          "<label>Reason <input name='reason' id='bulk-reason' size='40'></label> "
          "<button type='submit' id='bulk-submit'>Decide selected</button></fieldset></form>")
    return ctx.page("Review queue", body, current="/console/queue")

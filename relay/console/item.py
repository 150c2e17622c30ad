"""The Item page and the decisions taken on it (one item, a bulk selection, an admin's reveal).

Every decision runs the registered `review.decide` action in-process with the logged-in
reviewer as actor, so it is journaled exactly as `relay review decide --as …` journals it."""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web

from relay.console.auth import Ctx, guarded, see_other
from relay.console.item_read import Item, context, load
from relay.console.layout import e, options, url
from relay.console.queue import DECISION_LABELS
from relay.evidence.collect import iso
from relay.evidence.transcript import highlighted

log = logging.getLogger("relay.console")
MAX_BULK = 500
WITHHELD = "<p class='withheld' id='withheld'>Content withheld: this client made a data-subject erasure request.</p>"


def _decisions_allowed(item: Item) -> list[tuple[str, str]]:
    held = item.queue["action"] == "quarantine"
    keep = {"release", "reject"} if held else {"compliant", "non-compliant", "false-positive"}
    keep |= {"escalate", "annotate"}
    return [(v, label) for v, label in DECISION_LABELS if not v or v in keep]


def _message_html(item: Item, reveal: bool) -> str:
    m = item.message
    if item.restricted and not reveal:
        return WITHHELD
    rules = [r for r in json.loads(item.queue["rules_json"] or "[]") if isinstance(r, dict)]
    text = highlighted(str(m["text"] or ""), {"rules": rules})
    atts = "".join(f"<li>{e(a.get('name'))} ({e(a.get('mime'))}, {e(a.get('size'))} bytes)</li>"
                   for a in json.loads(m["attachments_json"] or "[]") if isinstance(a, dict))
    who = m["sender_display"] or m["sender_user"]
    return (f"<blockquote class='message' id='message-text'>{text}</blockquote>"
            f"<p>From {e(who)} ({e(m['sender_user'])}@{e(m['sender_channel'])}), {e(m['direction'])} on {e(m['channel'])},"
            f" {e(iso(m['ts']))}; conversation <a href='/console/conversation/{e(m['conversation'])}'>{e(m['conversation'])}</a>"
            f"{'; erased' if m['erased'] else ''}</p>" + (f"<ul>{atts}</ul>" if atts else ""))


def _rules_html(item: Item, policies: Any) -> str:
    rows = []
    for r in json.loads(item.queue["rules_json"] or "[]"):
        if not isinstance(r, dict):
            continue
        title = r.get("title") or ""
        if not title and policies is not None:
            try:
                title = policies.rule(str(r.get("rule"))).title
            except KeyError:
                title = "(rule no longer in the active set)"
        rows.append(f"<tr><td>{e(r.get('rule'))}</td><td>{e(title)}</td><td>{e(r.get('action'))}</td>"
                    f"<td>{e(r.get('severity'))}</td><td>{'sampled' if r.get('sampled') else ''}</td></tr>")
    return ("<table class='rules'><caption>Rules matched</caption><thead><tr><th>Rule</th><th>Title</th><th>Action</th>"
            "<th>Severity</th><th></th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def _deliveries_html(item: Item, reveal: bool) -> str:
    """The message's own deliveries, then the notices the relay sent about it (held, rejected):
    a notice to the sender is not a delivery of the message."""
    own = [d for d in item.deliveries if d["out"].get("kind") != "notice"]
    notices = [d for d in item.deliveries if d["out"].get("kind") == "notice"]
    html = (_delivery_table("deliveries", "What each recipient received", own, item.restricted and not reveal) if own else
            "<p id='deliveries'>Not delivered to anyone" + (" (held for review)." if item.queue["action"] == "quarantine" else ".") + "</p>")
    if notices:
        html += _delivery_table("notices", "Notices the relay sent about it", notices, False)
    return html


def _delivery_table(ident: str, caption: str, deliveries: list[dict[str, Any]], withheld: bool) -> str:
    rows = []
    for d in deliveries:
        to = d["to"]
        text = "<em>withheld</em>" if withheld else e(d["out"].get("text"))
        fails = "; ".join(str(x.get("reason")) for x in d["events"] if x["kind"] == "delivery.failed")
        rows.append(f"<tr><td>{e(to.get('user'))}@{e(to.get('channel'))}</td><td class='received'>{text}</td>"
                    f"<td>{e(d['state'])}</td><td>{e(fails)}</td></tr>")
    return (f"<table id='{ident}'><caption>{e(caption)}</caption><thead><tr><th>Recipient</th>"
            "<th>Text as sent</th><th>State</th><th>Failures</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def _decision_list(item: Item) -> str:
    if not item.decisions:
        return "<p id='decisions'>No decisions yet.</p>"
    lis = "".join(f"<li><b>{e(d.get('decision'))}</b> by {e(d.get('reviewer'))} at {e(iso(d['ts']))}"
                  + (f": {e(d.get('reason'))}" if d.get("reason") else "") + "</li>" for d in item.decisions)
    return f"<ol id='decisions'>{lis}</ol>"


def _context_html(ctx_msgs: tuple[list[dict[str, Any]], list[dict[str, Any]]], item: Item) -> str:
    before, after = ctx_msgs
    mid = item.message_id

    def li(r: dict[str, Any]) -> str:
        text = "<em>withheld</em>" if r["restricted"] else e(r["text"])
        return (f"<li class='{e(r['direction'])}'>#{int(r['seq'])} {e(iso(r['ts']))} {e(r['sender_display'] or r['sender_user'])}:"
                f" {text} <span class='v-{e(r['action'])}'>{e(r['action'] or '')}</span></li>")
    older = (f"<a id='ctx-older' href='{e(url(f'/console/item/{mid}', before=before[0]['seq']))}#context'>older messages</a>"
             if before else "")
    newer = (f"<a id='ctx-newer' href='{e(url(f'/console/item/{mid}', after=after[-1]['seq']))}#context'>newer messages</a>"
             if after else "")
    return (f"<section id='context' aria-label='conversation around the message'><h2>Conversation around it</h2>{older}"
            f"<ol>{''.join(li(r) for r in before)}<li class='this'><strong>this message</strong></li>"
            f"{''.join(li(r) for r in after)}</ol>{newer}</section>")


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except ValueError:
        return None


async def render(request: web.Request, ctx: Ctx, item: Item, reveal: bool = False, error: str = "",
                 notice: str = "", status: int = 200) -> web.Response:
    relay = ctx.console.relay
    near = await context(ctx.console, item.message["conversation"], int(item.message["seq"]),
                         _int(request.query.get("before")), _int(request.query.get("after")))
    mid = item.message_id
    state = item.queue["state"]
    state_text = {"decided": f"closed ({item.queue['decision']} by {item.queue['decided_by']})"}.get(state, state)
    reveal_form = ""
    if item.restricted and not reveal and ctx.reviewer.role == "admin":
        reveal_form = (f"<form method='post' action='/console/item/{e(mid)}/reveal'>{ctx.csrf_field}"
                       "<label>Why do you need to see it? <input name='reason' id='reveal-reason' required></label> "
                       "<button type='submit' id='reveal'>Reveal (journaled)</button></form>")
    body = (
        f"<p>State: <strong id='item-state'>{e(state_text)}</strong>; verdict <span class='v-{e(item.queue['action'])}'>"
        f"{e(item.queue['action'])}</span>.</p>"
        + _message_html(item, reveal) + reveal_form + _rules_html(item, relay.policies)
        + "<h2>Delivery</h2>" + _deliveries_html(item, reveal)
        + "<h2>Decisions</h2>" + _decision_list(item)
        + f"<form method='post' action='/console/item/{e(mid)}/decide' id='decide'>{ctx.csrf_field}"
          "<fieldset><legend>Decide</legend>"
          f"<label>Decision <select name='decision' id='decision' required>{options(_decisions_allowed(item), '')}</select></label> "
          "<label>Reason <input name='reason' id='reason' size='50'></label> "
          "<button type='submit' id='decide-submit'>Record decision</button>"
          "<p class='hint'>A reason is required except for release and compliant.</p></fieldset></form>"
        + _context_html(near, item))
    return ctx.page(f"Review item {mid}", body, error=error, notice=notice, status=status, current="/console/queue")


@guarded()
async def item_page(request: web.Request, ctx: Ctx) -> web.StreamResponse:
    item = await load(ctx.console, request.match_info["mid"])
    if item is None:
        return ctx.refuse(f"no review item {request.match_info['mid']!r}", 404)
    notice = {"1": "Decision recorded."}.get(request.query.get("done", ""), "")
    return await render(request, ctx, item, notice=notice)


async def _decide_one(ctx: Ctx, mid: str, decision: str, reason: str) -> tuple[int, str]:
    """(HTTP status, message) of one decision by the logged-in reviewer."""
    from relay.compliance.review import ReviewError

    item = await load(ctx.console, mid)
    if item is None:
        return 404, f"no review item {mid!r}"
    if item.queue["state"] == "escalated" and ctx.reviewer.role == "reviewer" and decision != "annotate":
        return 403, f"{mid} is escalated to supervisors; {ctx.reviewer.id} is a reviewer (only annotate is possible)"
    try:
        await ctx.console.act("review.decide", {"message_id": mid, "decision": decision,
                                                "reviewer": ctx.reviewer.id, "reason": reason})
    except ReviewError as exc:
        return 400, str(exc)
    return 200, f"{mid}: {decision}"


@guarded(write=True)
async def decide(request: web.Request, ctx: Ctx) -> web.StreamResponse:
    mid = request.match_info["mid"]
    status, message = await _decide_one(ctx, mid, ctx.get("decision")[:40], ctx.get("reason")[:4000])
    if status == 200:
        return see_other(f"/console/item/{mid}?done=1")
    item = await load(ctx.console, mid)
    if item is None:
        return ctx.refuse(message, status)
    return await render(request, ctx, item, error=message, status=status)


@guarded(write=True)
async def bulk(request: web.Request, ctx: Ctx) -> web.StreamResponse:
    """One decision and reason for every selected item: one `review.decided` per item."""
    mids = list(dict.fromkeys(m for m in ctx.getall("mid") if m))[:MAX_BULK + 1]
    if not mids:
        return ctx.refuse("select at least one item (x on the queue) before deciding", 400)
    if len(mids) > MAX_BULK:
        return ctx.refuse(f"at most {MAX_BULK} items per bulk decision", 400)
    decision, reason = ctx.get("decision")[:40], ctx.get("reason")[:4000]
    results = [(mid, *await _decide_one(ctx, mid, decision, reason)) for mid in mids]
    ok = [r for r in results if r[1] == 200]
    lis = "".join(f"<li class='{'ok' if s == 200 else 'failed'}'><a href='/console/item/{e(m)}'>{e(m)}</a>: "
                  f"{'decided' if s == 200 else e(msg)}</li>" for m, s, msg in results)
    status = 200 if ok else max(s for _, s, _ in results)
    return ctx.page("Bulk decision", f"<p id='bulk-result'>{len(ok)} of {len(results)} item(s) decided:"
                    f" {e(decision)}.</p><ul>{lis}</ul><p><a href='/console/queue'>Back to the queue</a></p>",
                    status=status, current="/console/queue")


@guarded(role="admin", write=True)
async def reveal(request: web.Request, ctx: Ctx) -> web.StreamResponse:
    """An admin sees restricted content; the view itself is journaled first."""
    mid = request.match_info["mid"]
    item = await load(ctx.console, mid)
    if item is None:
        return ctx.refuse(f"no review item {mid!r}", 404)
    reason = ctx.get("reason").strip()[:2000]
    if not reason:
        return await render(request, ctx, item, error="say why you need to see restricted content", status=400)
    if item.restricted:
        await ctx.console.audit(ctx.reviewer.id, "console.reveal_restricted",
                                {"message_id": mid, "conversation": item.message["conversation"], "reason": reason})
    return await render(request, ctx, item, reveal=True, notice="Restricted content shown; this view is journaled.")

"""Holds & erasure requests (supervisors and admins): list, add and release legal holds, and
record a data-subject erasure request, through the same admin actions as `relay hold …` and
`relay retention erase-request`, under the logged-in reviewer's name."""

from __future__ import annotations

from aiohttp import web

from relay.actions import AdminError
from relay.console.auth import Ctx, guarded, see_other
from relay.console.layout import e, options
from relay.evidence.collect import iso

SCOPES = (("conversation", "conversation"), ("client", "client (CHANNEL:USER)"), ("employee", "employee"))
DONE = {"added": "Legal hold added.", "released": "Legal hold released.", "erasure": "Erasure request recorded."}


async def render(ctx: Ctx, notice: str = "", error: str = "", status: int = 200) -> web.Response:
    holds, restricted = await ctx.console.state()
    rows = "".join(
        f"<tr id='hold-{e(h.id)}'><td>{e(h.id)}</td><td>{e(h.scope)}</td><td>{e(h.value)}</td><td>{e(h.reason)}</td>"
        f"<td>{e(h.actor)}</td><td>{e(iso(h.ts))}</td><td><form method='post' action='/console/holds/release'>"
        f"{ctx.csrf_field}<input type='hidden' name='hold_id' value='{e(h.id)}'>"
        f"<label>Reason <input name='reason' required size='20' id='release-reason-{e(h.id)}'></label> "
        f"<button type='submit' id='release-{e(h.id)}'>Release</button></form></td></tr>"
        for h in sorted(holds.values(), key=lambda h: h.seq))
    erasures = "".join(f"<li>{e(client)} (from journal seq {int(seq)}: content before it is restricted)</li>"
                       for client, seq in sorted(restricted.items()))
    body = (
        "<h2>Active legal holds</h2>"
        + (f"<table id='holds'><thead><tr><th>Hold</th><th>Scope</th><th>Covers</th><th>Reason</th><th>By</th><th>Since</th>"
           f"<th>Release</th></tr></thead><tbody>{rows}</tbody></table>" if rows else "<p id='holds'>No active holds.</p>")
        + "<h2>Add a legal hold</h2><form method='post' action='/console/holds/add' id='hold-add'>" + ctx.csrf_field
        + f"<label>Scope <select name='scope' id='hold-scope'>{options(SCOPES, 'conversation')}</select></label> "
          "<label>Covers <input name='value' id='hold-value' required></label> "
          "<label>Reason (the matter) <input name='reason' id='hold-reason' required size='30'></label> "
          "<button type='submit' id='hold-submit'>Add hold</button></form>"
        + "<h2>Erasure requests</h2>" + (f"<ul id='erasures'>{erasures}</ul>" if erasures else "<p id='erasures'>None.</p>")
        + "<form method='post' action='/console/erasure/request' id='erasure'>" + ctx.csrf_field
        + "<label>Client <input name='client' id='erasure-client' placeholder='CHANNEL:USER' required></label> "
          "<label>Reason (request reference) <input name='reason' id='erasure-reason' required size='30'></label> "
          "<button type='submit' id='erasure-submit'>Record erasure request</button>"
          "<p class='hint'>The client's content is withheld at once and erased when its retention ends.</p></form>")
    return ctx.page("Holds & erasure requests", body, notice=notice, error=error, status=status, current="/console/holds")


@guarded(role="supervisor")
async def holds_page(request: web.Request, ctx: Ctx) -> web.StreamResponse:
    return await render(ctx, notice=DONE.get(request.query.get("done", ""), ""))


async def _act(ctx: Ctx, name: str, params: dict[str, str], done: str) -> web.StreamResponse:
    try:
        await ctx.console.act(name, {**params, "actor": ctx.reviewer.id})
    except AdminError as exc:
        return await render(ctx, error=str(exc), status=400)
    return see_other(f"/console/holds?done={done}")


@guarded(role="supervisor", write=True)
async def add_hold(request: web.Request, ctx: Ctx) -> web.StreamResponse:
    return await _act(ctx, "hold.add", {"scope": ctx.get("scope")[:40], "value": ctx.get("value").strip()[:500],
                                        "reason": ctx.get("reason")[:2000]}, "added")


@guarded(role="supervisor", write=True)
async def release_hold(request: web.Request, ctx: Ctx) -> web.StreamResponse:
    return await _act(ctx, "hold.release", {"hold_id": ctx.get("hold_id")[:100], "reason": ctx.get("reason")[:2000]},
                      "released")


@guarded(role="supervisor", write=True)
async def request_erasure(request: web.Request, ctx: Ctx) -> web.StreamResponse:
    return await _act(ctx, "erase.request", {"client": ctx.get("client").strip()[:500], "reason": ctx.get("reason")[:2000]},
                      "erasure")


def add_routes(r: web.UrlDispatcher) -> None:
    r.add_get("/console/holds", holds_page)
    r.add_post("/console/holds/add", add_hold)
    r.add_post("/console/holds/release", release_hold)
    r.add_post("/console/erasure/request", request_erasure)

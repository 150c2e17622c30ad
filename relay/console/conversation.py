"""The Conversation page: the whole timeline an auditor needs, rendered by the export's own
HTML transcript (`relay.evidence.transcript`) from the conversation's events (read by the
`events_conversation` index, a page of messages at a time), printable. Restricted messages
are withheld as in an export; an admin's reveal is journaled first."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from relay.console.auth import Ctx, guarded
from relay.console.layout import e, url
from relay.evidence.collect import MESSAGE_REF_KINDS, Ev, MessageRecord, attach, is_restricted, iso, row_to_ev
from relay.compliance.restricted import withheld_body
from relay.evidence.transcript import render_transcript

PAGE_MESSAGES = 500


async def timeline(console: Any, conversation: str, after: int, reveal: bool
                   ) -> tuple[list[MessageRecord], list[tuple[float, dict[str, Any]]], int | None, int]:
    """(messages, assignments, seq to continue after or None, restricted messages withheld)."""
    j = console.journal
    seqs = [int(r["seq"]) for r in await j.fetchall(
        "SELECT seq FROM messages WHERE conversation = ? AND seq > ? ORDER BY seq LIMIT ?",
        (conversation, after, PAGE_MESSAGES + 1))]
    more = len(seqs) > PAGE_MESSAGES
    seqs = seqs[:PAGE_MESSAGES]
    if not seqs:
        return [], [], None, 0
    lo = seqs[0] if after else 0  # the first page also holds what came before the first message
    hi_rows = await j.fetchall("SELECT MIN(seq) AS n FROM messages WHERE conversation = ? AND seq > ?",
                               (conversation, seqs[-1]))
    hi = int(hi_rows[0]["n"]) if more and hi_rows[0]["n"] is not None else None
    cond = "conversation = ? AND seq >= ?" + (" AND seq < ?" if hi is not None else "")
    params: tuple[Any, ...] = (conversation, lo) + ((hi,) if hi is not None else ())
    rows = await j.fetchall(f"SELECT seq, ts, kind, conversation, body_json, prev_hash, hash FROM events WHERE {cond}"
                            " ORDER BY seq", params)
    restricted = await console.restricted()
    erased = {int(r["seq"]): r["erased"] for r in await j.fetchall(
        f"SELECT seq, erased FROM messages WHERE seq IN ({','.join('?' * len(seqs))})", tuple(seqs))}
    records: dict[str, MessageRecord] = {}
    ordered: list[MessageRecord] = []
    assignments: list[tuple[float, dict[str, Any]]] = []
    withheld = 0
    for row in rows:
        ev: Ev = row_to_ev(row)
        if ev.kind == "message.received":
            hidden = is_restricted(ev.seq, ev.body.get("client"), restricted)
            body = withheld_body(ev.kind, ev.body) if hidden and not reveal else ev.body
            withheld += hidden and not reveal
            gone = ev.body.get("erased")
            rec = MessageRecord(str(ev.body.get("id")), ev.seq, ev.ts, conversation, body, restricted=hidden,
                                erased=({"reason": gone.get("reason", ""), "ts": None} if isinstance(gone, dict)
                                        else {"reason": "erased", "ts": None} if erased.get(ev.seq) else None))
            records[rec.id] = rec
            ordered.append(rec)
        elif ev.kind in MESSAGE_REF_KINDS:
            rec = records.get(str(ev.body.get("message_id")))
            if rec is not None:
                body = withheld_body(ev.kind, ev.body) if rec.restricted and not reveal else ev.body
                attach(rec, Ev(ev.seq, ev.ts, ev.kind, ev.conversation, body, ev.prev_hash, ev.hash))
        elif ev.kind == "conversation.assigned":
            hidden = is_restricted(ev.seq, ev.body.get("client"), restricted)
            assignments.append((ev.ts, withheld_body(ev.kind, ev.body) if hidden and not reveal else ev.body))
    return ordered, assignments, (seqs[-1] if more else None), withheld


def _table(html: str) -> str:
    """The transcript's table (the page around it is the console's)."""
    start, end = html.find("<table>"), html.rfind("</table>")
    return html[start:end + len("</table>")] if start >= 0 and end > start else html


async def render(request: web.Request, ctx: Ctx, conversation: str, reveal: bool = False, notice: str = "",
                 error: str = "", status: int = 200) -> web.Response:
    try:
        after = max(0, int(request.query.get("after", "0") or 0))
    except ValueError:
        after = 0
    messages, assignments, more, withheld = await timeline(ctx.console, conversation, after, reveal)
    if not messages and not after:
        return ctx.refuse(f"no conversation {conversation!r} in the journal", 404)
    conv = await ctx.console.journal.fetchall("SELECT * FROM conversations WHERE id = ?", (conversation,))
    info = dict(conv[0]) if conv else {}
    holds, _ = await ctx.console.state()
    client = {"channel": info.get("client_channel"), "user": info.get("client_user")}
    covering = [h for h in holds.values() if h.covers(conversation, client, [info.get("employee") or ""])]
    html = render_transcript(conversation, messages, assignments, {}, iso(time.time()))
    parts = [f"<p>Client {e(info.get('client_user'))}@{e(info.get('client_channel'))}; employee {e(info.get('employee'))};"
             f" {len(messages)} message(s) on this page. <button type='button' id='print'"
             " class='print'>Print</button> (or Ctrl+P: the print layout leaves out the console).</p>"]
    if covering:
        parts.append("<p id='holds'>Legal hold(s): " + "; ".join(f"{e(h.id)} ({e(h.scope)} {e(h.value)}): {e(h.reason)}"
                                                                 for h in covering) + "</p>")
    if withheld:
        parts.append(f"<p class='withheld' id='withheld'>{withheld} message(s) withheld: data-subject erasure request.</p>")
        if ctx.reviewer.role == "admin":
            parts.append(f"<form method='post' action='/console/conversation/{e(conversation)}/reveal'>{ctx.csrf_field}"
                         "<label>Why do you need to see it? <input name='reason' id='reveal-reason' required></label> "
                         "<button type='submit' id='reveal'>Reveal (journaled)</button></form>")
    parts.append(f"<div class='transcript'>{_table(html)}</div>")
    if more is not None:
        parts.append(f"<p><a id='more' href='{e(url(f'/console/conversation/{conversation}', after=more))}'>later messages →</a></p>")
    return ctx.page(f"Conversation {conversation}", "".join(parts), notice=notice, error=error, status=status)


@guarded()
async def conversation_page(request: web.Request, ctx: Ctx) -> web.StreamResponse:
    return await render(request, ctx, request.match_info["cid"])


@guarded(role="admin", write=True)
async def reveal(request: web.Request, ctx: Ctx) -> web.StreamResponse:
    cid = request.match_info["cid"]
    reason = ctx.get("reason").strip()[:2000]
    if not reason:
        return await render(request, ctx, cid, error="say why you need to see restricted content", status=400)
    await ctx.console.audit(ctx.reviewer.id, "console.reveal_restricted", {"conversation": cid, "reason": reason})
    return await render(request, ctx, cid, reveal=True, notice="Restricted content shown; this view is journaled.")


def add_routes(r: web.UrlDispatcher) -> None:
    r.add_get("/console/conversation/{cid}", conversation_page)
    r.add_post("/console/conversation/{cid}/reveal", reveal)

"""The Search page: the journal's full-text search (`relay journal search`) with its filters;
results show their context and open the conversation at that message. Restricted content is
left out as in the CLI; an admin who includes it is journaled doing so."""

from __future__ import annotations

from aiohttp import web

from relay.console.auth import Ctx, guarded
from relay.console.layout import e, options
from relay.evidence import FilterError, SearchQuery, parse_time, search

FIELDS = ("q", "channel", "employee", "client", "conversation", "direction", "action", "rule", "since", "until")


def _form(p: dict[str, str], admin: bool, config: object) -> str:
    directions = [("", "any"), ("inbound", "inbound"), ("outbound", "outbound")]
    actions = [("", "any")] + [(a, a) for a in ("allow", "flag", "redact", "quarantine", "block")]
    restricted = (f"<label><input type='checkbox' name='include_restricted' value='1' id='s-restricted'"
                  f"{' checked' if p.get('include_restricted') else ''}> include restricted (journaled)</label>"
                  if admin else "")
    return (
        "<form method='get' action='/console/search' class='filters' role='search'>"
        f"<label>Text <input id='s-q' name='q' value='{e(p.get('q'))}' size='30'></label>"
        f"<label>Channel <input id='s-channel' name='channel' value='{e(p.get('channel'))}' size='10'></label>"
        f"<label>Employee <input id='s-employee' name='employee' value='{e(p.get('employee'))}' size='8'></label>"
        f"<label>Client <input id='s-client' name='client' value='{e(p.get('client'))}' size='14' placeholder='CHANNEL:USER'></label>"
        f"<label>Conversation <input id='s-conversation' name='conversation' value='{e(p.get('conversation'))}' size='12'></label>"
        f"<label>Direction <select id='s-direction' name='direction'>{options(directions, p.get('direction'))}</select></label>"
        f"<label>Verdict <select id='s-action' name='action'>{options(actions, p.get('action'))}</select></label>"
        f"<label>Rule <input id='s-rule' name='rule' value='{e(p.get('rule'))}' size='8'></label>"
        f"<label>Since <input id='s-since' name='since' value='{e(p.get('since'))}' size='10' placeholder='YYYY-MM-DD'></label>"
        f"<label>Until <input id='s-until' name='until' value='{e(p.get('until'))}' size='10' placeholder='YYYY-MM-DD'></label>"
        f"{restricted}<button type='submit' id='s-submit'>Search</button></form>")


def context_html(text: str, terms: list[str], width: int = 60) -> str:
    """The text around the first term found, every term in it marked (`<mark>`), escaped."""
    low = text.casefold()
    hits = [(low.find(t.casefold()), t) for t in terms if t and low.find(t.casefold()) >= 0]
    if not hits:
        return e(text[: 2 * width]) + ("…" if len(text) > 2 * width else "")
    first = min(h[0] for h in hits)
    start, end = max(0, first - width), min(len(text), first + width)
    part = text[start:end]
    spans: list[tuple[int, int]] = []
    plow = part.casefold()
    for _, t in hits:
        i = plow.find(t.casefold())
        while i >= 0:
            spans.append((i, i + len(t)))
            i = plow.find(t.casefold(), i + len(t))
    out, pos = [], 0
    for s, t_end in sorted(spans):
        if s < pos:
            continue
        out += [e(part[pos:s]), f"<mark>{e(part[s:t_end])}</mark>"]
        pos = t_end
    out.append(e(part[pos:]))
    return ("…" if start else "") + "".join(out) + ("…" if end < len(text) else "")


@guarded()
async def search_page(request: web.Request, ctx: Ctx) -> web.StreamResponse:
    p = {k: str(request.query.get(k, "") or "").strip()[:500] for k in (*FIELDS, "include_restricted")}
    admin = ctx.reviewer.role == "admin"
    form = _form(p, admin, ctx.console.relay.config)
    if not any(p[k] for k in FIELDS):
        return ctx.page("Search the journal", form + "<p>Give some text (3+ characters use the index) or a filter.</p>",
                        current="/console/search")
    include = admin and bool(p["include_restricted"])
    try:
        if p["direction"] not in ("", "inbound", "outbound"):
            raise FilterError("direction must be inbound or outbound")
        q = SearchQuery(text=p["q"], channel=p["channel"] or None, employee=p["employee"] or None,
                        client=p["client"] or None, direction=p["direction"] or None, action=p["action"] or None,
                        rule=p["rule"] or None, conversation=p["conversation"] or None,
                        since=parse_time(p["since"] or None), until=parse_time(p["until"] or None, end=True), limit=100)
    except FilterError as exc:
        return ctx.page("Search the journal", form, error=str(exc), status=400, current="/console/search")
    restricted = await ctx.console.restricted()
    if include and restricted:
        await ctx.console.audit(ctx.reviewer.id, "console.search_restricted",
                                {k: v for k, v in p.items() if v and k != "include_restricted"})
    rows = await search(ctx.console.journal, q, restricted, include)
    items = "".join(
        f"<li class='hit'><a class='hit-link' href='/console/conversation/{e(r['conversation'])}#m{int(r['seq'])}'>"
        f"{e(r['conversation'] or '-')} #{int(r['seq'])}</a> {e(r['time'])} {e(r['direction'])} on {e(r['channel'])},"
        f" {e(r['sender']['display'] or r['sender_user'])}: <span class='snip'>{context_html(str(r['text'] or ''), p['q'].split())}</span>"
        f" <span class='v-{e(r['action'])}'>{e(r['action'] or 'no verdict')}</span>"
        + (f" rules {e(', '.join(str(x) for x in r['rules']))}" if r["rules"] else "") + "</li>"
        for r in rows)
    result = (f"<p id='search-count' role='status'>{len(rows)} result(s)" + (" (the newest 100)" if len(rows) == 100 else "")
              + ".</p>" + (f"<ol id='results'>{items}</ol>" if rows else "<p>No message matches.</p>"))
    return ctx.page("Search the journal", form + result, current="/console/search")


def add_routes(r: web.UrlDispatcher) -> None:
    r.add_get("/console/search", search_page)

"""The HTML shell every console page shares: navigation with access keys, the CSRF token for
forms, and escaping helpers. Plain HTML that works without JavaScript; console.js only adds
the live feed, shortcuts and export progress."""

from __future__ import annotations

from html import escape
from typing import Any, Iterable
from urllib.parse import urlencode

from aiohttp import web

NAV = (  # (path, label, access key, least role)
    ("/console/queue", "Queue", "q", "reviewer"),
    ("/console/search", "Search", "s", "reviewer"),
    ("/console/dashboard", "Dashboard", "d", "reviewer"),
    ("/console/exports", "Export", "x", "reviewer"),
    ("/console/holds", "Holds & erasure", "h", "supervisor"),
    ("/console/policies", "Policies", "p", "reviewer"),
)
RANK = {"reviewer": 0, "supervisor": 1, "admin": 2}


def e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def csrf_field(token: str) -> str:
    return f'<input type="hidden" name="csrf" value="{e(token)}">'


def url(path: str, **params: Any) -> str:
    kept = {k: v for k, v in params.items() if v not in (None, "")}
    return path + ("?" + urlencode(kept, doseq=True) if kept else "")


def options(values: Iterable[tuple[str, str]], chosen: str | None) -> str:
    return "".join(f'<option value="{e(v)}"{" selected" if v == (chosen or "") else ""}>{e(label)}</option>'
                   for v, label in values)


def page(title: str, body: str, *, who: Any = None, csrf: str = "", status: int = 200, current: str = "",
         notice: str = "", error: str = "") -> web.Response:
    """A whole page; `who` is the logged-in reviewer (None on the login page)."""
    nav = ""
    if who is not None:
        links = "".join(
            f'<li><a href="{p}" accesskey="{k}"{" aria-current=page" if p == current else ""}>{e(label)}'
            f' <kbd>{k}</kbd></a></li>'
            for p, label, k, role in NAV if RANK.get(who.role, -1) >= RANK[role])
        nav = (f'<nav aria-label="Console"><ul>{links}</ul>'
               f'<form method="post" action="/console/logout" class="logout">{csrf_field(csrf)}'
               f'<span>{e(who.name or who.id)} ({e(who.role)})</span> <button type="submit">Log out</button></form></nav>')
    flash = ""
    if notice:
        flash += f'<p class="notice" role="status">{e(notice)}</p>'
    if error:
        flash += f'<p class="error" role="alert" id="error">{e(error)}</p>'
    html = (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{e(title)} · relay console</title>"
        "<link rel='stylesheet' href='/console/static/console.css'>"
        f"<meta name='csrf-token' content='{e(csrf)}'>"
        "<script src='/console/static/console.js' defer></script></head><body>"
        "<a class='skip' href='#main'>Skip to content</a>"
        f"<header><strong>relay · compliance console</strong>{nav}</header>"
        f"<main id='main' tabindex='-1'><h1>{e(title)}</h1>{flash}{body}</main>"
        "<footer>Keyboard: Alt+the letter shown beside a page name moves to it; on the queue "
        "<kbd>j</kbd>/<kbd>k</kbd> move, <kbd>x</kbd> selects, <kbd>o</kbd> opens; <kbd>/</kbd> focuses the first filter.</footer>"
        "</body></html>")
    return web.Response(text=html, content_type="text/html", status=status,
                        headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY",
                                 "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
                                                            "script-src 'self'; frame-ancestors 'none'; form-action 'self'"})


def refusal(message: str, status: int, who: Any = None, csrf: str = "") -> web.Response:
    """An error page (403 for a role, 400 for a bad request, 404 for a missing thing)."""
    titles = {400: "Not possible", 403: "Not allowed", 404: "Not found", 401: "Log in"}
    return page(titles.get(status, "Error"), "<p><a href='/console/queue'>Back to the queue</a></p>", who=who,
                csrf=csrf, status=status, error=message)

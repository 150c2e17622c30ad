"""Who is asking: reviewer logins (scrypt hashes of `reviewers:`), the session cookie, role
checks and the CSRF check on every write, in one decorator every console route goes through."""

from __future__ import annotations

from html import escape

import asyncio
import logging
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from aiohttp import web

from relay.console.layout import RANK, csrf_field, e, page, refusal
from relay.console.sessions import Session
from relay.login_throttle import request_address
from relay.passwords import hash_password, verify_password

if TYPE_CHECKING:
    from relay.console.state import Console

log = logging.getLogger("relay.console")

COOKIE = "relay_console"
LOGIN_COOKIE = "relay_console_login"
MAX_FORM_BYTES = 256 * 1024
BAD_LOGIN = "wrong reviewer name or password"
_DUMMY_HASH = hash_password("relay-console-timing-equalizer")


@dataclass
class Ctx:
    """One authenticated request: the console, the session, the reviewer and (for POST) the form."""

    console: "Console"
    session: Session
    reviewer: Any
    form: dict[str, list[str]] = field(default_factory=dict)

    def get(self, name: str, default: str = "") -> str:
        values = self.form.get(name)
        return values[0] if values else default

    def getall(self, name: str) -> list[str]:
        return list(self.form.get(name, ()))

    def page(self, title: str, body: str, **kw: Any) -> web.Response:
        return page(title, integrity_banner(self.console.relay) + body, who=self.reviewer, csrf=self.session.csrf, **kw)

    def refuse(self, message: str, status: int = 400) -> web.Response:
        return refusal(message, status, self.reviewer, self.session.csrf)

    @property
    def csrf_field(self) -> str:
        return csrf_field(self.session.csrf)


def integrity_banner(relay: Any) -> str:
    """Every page says when a record check failed (scheduled journal verification, the WORM copy,
    the archive feed): compliance must not learn of it only from /healthz."""
    health = getattr(relay, "health", None)
    failed = sorted((name, c) for name, c in (health.checks.items() if health is not None else ()) if not c.ok)
    if not failed:
        return ""
    items = "".join(f"<li><strong>{escape(name)}</strong>: {escape(c.detail)}</li>" for name, c in failed)
    return (f'<section class="error" role="alert" id="integrity-alert"><h2>Record integrity check failed</h2>'
            f"<ul>{items}</ul><p>See the Dashboard and <code>relay journal verify --full</code>.</p></section>")


def see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store"})


Handler = Callable[[web.Request, Ctx], Awaitable[web.StreamResponse]]


async def read_form(request: web.Request) -> dict[str, list[str]]:
    """A url-encoded or multipart form, bounded before it is read."""
    if (request.content_length or 0) > MAX_FORM_BYTES:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_FORM_BYTES, actual_size=request.content_length or 0)
    raw = await request.content.read(MAX_FORM_BYTES + 1)
    if len(raw) > MAX_FORM_BYTES:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_FORM_BYTES, actual_size=len(raw))
    from urllib.parse import parse_qs
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise web.HTTPBadRequest(text="the form is not UTF-8") from None
    return {k: [v.replace("\x00", "") for v in vs] for k, vs in parse_qs(text, keep_blank_values=True).items()}


def login_page(request: web.Request, error: str = "", status: int = 200, username: str = "") -> web.Response:
    token = secrets.token_urlsafe(24)
    nxt = request.path_qs if request.path.startswith("/console") and request.path != "/console/login" else "/console/queue"
    if request.method != "GET":
        nxt = "/console/queue"
    body = (
        "<form method='post' action='/console/login' class='login'>"
        f"<input type='hidden' name='login_token' value='{e(token)}'>"
        f"<input type='hidden' name='next' value='{e(nxt)}'>"
        f"<p><label for='reviewer'>Reviewer</label> <input id='reviewer' name='reviewer' autocomplete='username'"
        f" required autofocus value='{e(username)}'></p>"
        "<p><label for='password'>Password</label> <input id='password' name='password' type='password'"
        " autocomplete='current-password' required></p>"
        "<p><button id='login-submit' type='submit'>Log in</button></p></form>")
    response = page("Log in", body, status=status, error=error)
    response.set_cookie(LOGIN_COOKIE, token, path="/console", httponly=True, samesite="Strict",
                        secure=_secure(request), max_age=3600)
    return response


def _secure(request: web.Request) -> bool:
    from relay.console.state import CONSOLE_KEY
    return request.app[CONSOLE_KEY].secure_cookies


def guarded(role: str = "reviewer", write: bool = False) -> Callable[[Handler], Callable[[web.Request], Awaitable[web.StreamResponse]]]:
    """Wrap a console route: 401 (the login form) without a session, 403 below `role`, and for
    writes 403 unless the form's `csrf` (or the X-CSRF-Token header) is the session's token."""
    def wrap(fn: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handler(request: web.Request) -> web.StreamResponse:
            from relay.console.state import CONSOLE_KEY
            console: Console = request.app[CONSOLE_KEY]
            session = console.sessions.get(request.cookies.get(COOKIE))
            reviewer = console.reviewer(session.reviewer) if session is not None else None
            if session is None or reviewer is None:
                if request.headers.get("Accept", "").startswith("text/event-stream") or request.path.endswith("/events"):
                    return web.json_response({"error": "not logged in: log in at /console/login"}, status=401)
                return login_page(request, "Log in first (your session ended or never began).", status=401)
            ctx = Ctx(console, session, reviewer)
            if write:
                ctx.form = await read_form(request)
                if not session.csrf_ok(ctx.get("csrf") or request.headers.get("X-CSRF-Token")):
                    log.warning("console: refused a write without a valid CSRF token (%s, %s)", reviewer.id, request.path)
                    return ctx.refuse("This form's security token (CSRF) is missing or wrong: reload the page and try"
                                      " again.", 403)
            if RANK.get(reviewer.role, -1) < RANK[role]:
                return ctx.refuse(f"{reviewer.id} has role {reviewer.role}; this needs a {role}"
                                  + (" or admin" if role == "supervisor" else "") + ".", 403)
            return await fn(request, ctx)
        handler.__name__ = fn.__name__
        handler.__doc__ = fn.__doc__
        return handler
    return wrap


async def get_login(request: web.Request) -> web.StreamResponse:
    return login_page(request)


async def post_login(request: web.Request) -> web.StreamResponse:
    from relay.console.state import CONSOLE_KEY
    console: Console = request.app[CONSOLE_KEY]
    form = await read_form(request)
    name = (form.get("reviewer") or [""])[0].strip()[:200]
    password = (form.get("password") or [""])[0][:1024]
    token = (form.get("login_token") or [""])[0]
    if not token or not secrets.compare_digest(token.encode(), request.cookies.get(LOGIN_COOKIE, "").encode()):
        return login_page(request, "The login form expired or came from elsewhere (CSRF): log in again.", status=403,
                          username=name)
    address = request_address(request, console.trusted_proxies)
    wait = console.throttle.retry_after(name, address)
    if wait > 0:
        log.warning("console: login for %r from %s refused: too many failures", name[:100], address)
        response = login_page(request, f"Too many failed logins; try again in {int(wait) + 1} s.", status=429,
                              username=name)
        response.headers["Retry-After"] = str(int(wait) + 1)
        return response
    reviewer = console.reviewer(name) if name else None
    stored = reviewer.password_hash if reviewer is not None else ""
    ok = await asyncio.to_thread(verify_password, password, stored or _DUMMY_HASH)
    if reviewer is None or not stored or not ok:
        console.throttle.failed(name, address)
        log.warning("console: failed login for %r from %s", name[:100], address)
        return login_page(request, BAD_LOGIN, status=401, username=name)
    console.throttle.succeeded(name, address)
    session = console.sessions.open(reviewer.id)
    log.info("console: %s (%s) logged in from %s", reviewer.id, reviewer.role, address)
    nxt = (form.get("next") or ["/console/queue"])[0]
    if not nxt.startswith("/console/") or nxt.startswith("//"):
        nxt = "/console/queue"
    response = see_other(nxt)
    response.set_cookie(COOKIE, session.token, path="/console", httponly=True, samesite="Strict",
                        secure=console.secure_cookies, max_age=int(console.sessions.lifetime))
    response.del_cookie(LOGIN_COOKIE, path="/console")
    return response


@guarded(write=True)
async def post_logout(request: web.Request, ctx: Ctx) -> web.StreamResponse:
    ctx.console.sessions.close(ctx.session.token)
    log.info("console: %s logged out", ctx.reviewer.id)
    response = see_other("/console/login")
    response.del_cookie(COOKIE, path="/console")
    return response

"""The employee desk (network `webdesk`): login, one WebSocket per open desk tab, replies and edits.

Employees log in with the scrypt password hash from config; the session cookie is HttpOnly
and SameSite=Strict, and the session lives server-side. Everything pushed carries its
conversation id and the policy verdict, so the desk can show why a message was flagged.
On connect the page asks for its assigned conversations and their history (`conversations`
and `history` frames, answered from the journal through `ChannelContext.history`), so any
browser shows the same desk.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from aiohttp import WSCloseCode, web
from aiohttp.http_exceptions import HttpProcessingError

from bots.base import ChannelContext, EmployeeInfo, History
from bots.webchat import frames
from bots.webchat.channel import SETTINGS, SocketChannel, create_channel
from bots.webchat.pages import add_page_routes
from bots.webchat.sessions import Session, Sessions
from bots.webchat.uploads import malformed_reason
from relay.login_throttle import LoginThrottle, parse_proxies, request_address
from relay.model import Attachment, HistoryItem, HistoryRefused, Inbound, Outgoing, Party, Receipt
from relay.passwords import hash_password, verify_password

log = logging.getLogger("relay.webdesk")

COOKIE = "relay_desk"
BAD_LOGIN = "wrong employee or password"
DEACTIVATED_CLOSE_CODE = 4403
"""WebSocket close code (private range, after HTTP 403) for "your desk access was withdrawn"."""
DEACTIVATED_REASON = "employee deactivated: desk access withdrawn"
MAX_LOGIN_BODY = 16 * 1024
PAGE_MESSAGES = 30
"""Messages per history page unless the page asks for fewer or more (at most MAX_PAGE)."""
PAGE_CONVERSATIONS = 50
MAX_PAGE = 100
MAX_PAGE_BYTES = 512 * 1024
"""An answer stops short of this many bytes of JSON (keeping the newest messages) and says `more`."""
SEQ_MAX = 2**62
_DUMMY_HASH = hash_password("relay-timing-equalizer")


class WebDeskChannel(SocketChannel):
    """Channel `name`: routes under `prefix`, sockets keyed by employee address."""

    OWNER = "desk"
    OFFLINE = "employee offline"

    def __init__(self, name: str, ctx: ChannelContext, prefix: str) -> None:
        super().__init__(name, ctx, prefix)
        self.sessions = Sessions()
        self.throttle = LoginThrottle()
        self.trusted_proxies = parse_proxies(ctx.extra.get("trusted_proxies"))
        self._secure = ctx.public_url.startswith("https://")

    def add_routes(self, app: web.Application) -> None:
        add_page_routes(app, self.prefix, "desk.html", ("common.js", "desk.js", "style.css"))
        app.router.add_post(f"{self.prefix}/login", self._login)
        app.router.add_post(f"{self.prefix}/logout", self._logout)
        app.router.add_get(f"{self.prefix}/session", self._session_info)
        app.router.add_get(f"{self.prefix}/history/{{message}}/{{sha256}}", self._history_file)
        self._add_socket_routes(app)

    def _push_frame(self, out: Outgoing, urls: list[str | None]) -> frames.Frame:
        return frames.desk_push(out, urls)

    async def _file_url(self, attachment: Attachment, employee: str) -> str | None:
        sha = await self.uploads.keep(attachment, self._owner(employee))
        return None if sha is None else f"{self.prefix}/file/{sha}"

    def _find(self, login: str) -> EmployeeInfo | None:
        employees = self.ctx.employees
        if login in employees:
            return employees[login]
        return next((e for e in employees.values() if e.id == login), None)

    def _current(self, request: web.Request) -> tuple[Session, EmployeeInfo] | None:
        session = self.sessions.get(request.cookies.get(COOKIE))
        if session is None:
            return None
        employee = self.ctx.employees.get(session.employee)
        if employee is None or not employee.active:
            self.sessions.close(session.token)
            return None
        return session, employee

    def _require(self, request: web.Request) -> tuple[Session, EmployeeInfo]:
        current = self._current(request)
        if current is None:
            raise web.HTTPUnauthorized(text='{"error":"not logged in"}', content_type="application/json")
        return current

    async def _login(self, request: web.Request) -> web.Response:
        if (request.content_length or 0) > MAX_LOGIN_BODY:
            return web.json_response({"error": "login form too large"}, status=413)
        try:
            form = await request.post()
        except (ValueError, HttpProcessingError) as exc:
            return web.json_response({"error": f"malformed login form: {malformed_reason(exc)}"}, status=400)
        login = str(form.get("employee", "")).strip()
        password = str(form.get("password", ""))
        remote = request_address(request, self.trusted_proxies)
        wait = self.throttle.retry_after(login, remote)
        if wait > 0:
            log.warning("desk %s: a login from %s refused: too many failures", self.name, remote)
            return web.json_response({"error": f"too many failed logins; try again in {int(wait) + 1} s"},
                                     status=429, headers={"Retry-After": str(int(wait) + 1)})
        employee = self._find(login) if login else None
        stored = employee.password_hash if employee is not None and employee.active else ""
        ok = await asyncio.to_thread(verify_password, password, stored or _DUMMY_HASH)
        if employee is None or not employee.active or not stored or not ok:
            self.throttle.failed(login, remote)
            # what was typed is never logged: it may be a password typed in the wrong field
            log.warning("desk %s: failed login for %s from %s", self.name,
                        employee.address if employee is not None else "an unknown name", remote)
            return web.json_response({"error": BAD_LOGIN}, status=401)
        self.throttle.succeeded(login, remote)
        session = self.sessions.open(employee.address)
        log.info("desk %s: %s logged in from %s", self.name, employee.address, request.remote)
        response = web.json_response({"employee": employee.address, "name": employee.name})
        response.set_cookie(COOKIE, session.token, path=self.prefix, httponly=True, samesite="Strict",
                            secure=self._secure, max_age=int(self.sessions.lifetime))
        return response

    async def _logout(self, request: web.Request) -> web.Response:
        session = self.sessions.close(request.cookies.get(COOKIE))
        if session is not None:
            log.info("desk %s: %s logged out", self.name, session.employee)
            if not self.sessions.has_employee(session.employee):
                await self.sockets.close(session.employee, "logged out")
        response = web.json_response({"ok": True})
        response.del_cookie(COOKIE, path=self.prefix)
        return response

    async def end_sessions(self, address: str, reason: str = DEACTIVATED_REASON) -> int:
        """Deactivation: drop every login of `address` and close their desk sockets with 4403."""
        logins = self.sessions.close_employee(address)
        closed = await self.sockets.close(address, reason, code=DEACTIVATED_CLOSE_CODE)
        log.info("desk %s: %s deactivated; %d login(s) ended, %d socket(s) closed", self.name, address, logins, closed)
        return closed

    async def handed_away(self, address: str, conversation: str, to: str) -> int:
        """A handover: the open desks of `address` mark the conversation as handed to `to`, read-only."""
        return await self.sockets.push(address, {"type": "handed_over", "conversation": conversation,
                                                 "to": {"name": to}})

    def _refusal(self, request: web.Request, key: str) -> tuple[int, str] | None:
        employee = self.ctx.employees.get(key)
        if employee is None or not employee.active:
            return DEACTIVATED_CLOSE_CODE, DEACTIVATED_REASON
        if self.sessions.get(request.cookies.get(COOKIE)) is None:
            return WSCloseCode.GOING_AWAY, "logged out"
        return None

    async def _session_info(self, request: web.Request) -> web.Response:
        _, employee = self._require(request)
        return web.json_response({"employee": employee.address, "name": employee.name})

    def _key(self, request: web.Request) -> str:
        return self._require(request)[1].address

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        _, employee = self._require(request)
        return await self._serve_socket(request, employee.address, lambda data: self._handle(data, employee))

    async def _handle(self, data: str, employee: EmployeeInfo) -> frames.Frame:
        frame = frames.parse(data, ("reply", "edit", "conversations", "history"))
        frame_id = frame["id"]
        if frame["type"] in ("conversations", "history"):
            return await self._history_answer(frame, employee)
        conversation = frames.text_field(frame, "conversation", frames.MAX_ID, frame_id, required=True)
        text = frames.text_field(frame, "text", frames.MAX_TEXT, frame_id)
        who = employee.address
        edits = None
        ids: list[str] = []
        if frame["type"] == "edit":
            edits = f"{who}:{frames.text_field(frame, 'edits', frames.MAX_ID, frame_id, required=True)}"
            if not text.strip():
                raise frames.FrameError("an edit needs the new `text`", frame_id)
        else:
            ids = frames.upload_ids(frame)
            if not text.strip() and not ids:
                raise frames.FrameError("empty reply: give `text` or `attachments`", frame_id)
        inbound = Inbound(
            channel=self.name,
            platform_id=f"{who}:{frame_id}",
            sender=Party(self.name, who, employee.name),
            chat=conversation,
            kind="edit" if edits else "message",
            text=text,
            edits=edits,
            raw=data.encode("utf-8"),
        )
        return await self._deliver_with_uploads(inbound, ids, who, frame_id)

    def _history(self, frame_id: str) -> History:
        if self.ctx.history is None:
            raise frames.FrameError("this desk keeps no history on the server", frame_id)
        return self.ctx.history

    async def _history_answer(self, frame: frames.Frame, employee: EmployeeInfo) -> frames.Frame:
        """A `conversations` or `history` request: one bounded page, only of this employee's conversations."""
        frame_id = frame["id"]
        history = self._history(frame_id)
        before = frames.int_field(frame, "before", 1, SEQ_MAX, frame_id)
        if frame["type"] == "conversations":
            limit = frames.int_field(frame, "limit", 1, MAX_PAGE, frame_id) or PAGE_CONVERSATIONS
            items, more = await history.conversations(employee.id, before, limit)
            return {"type": "conversations", "id": frame_id, "conversations": [frames.conversation_entry(c) for c in items],
                    "more": more, "before": items[-1].last_seq if items else None}
        conversation = frames.text_field(frame, "conversation", frames.MAX_ID, frame_id, required=True)
        limit = frames.int_field(frame, "limit", 1, MAX_PAGE, frame_id) or PAGE_MESSAGES
        try:
            page = await history.messages(employee.id, conversation, before, limit)
        except HistoryRefused as exc:
            raise frames.FrameError(str(exc), frame_id) from None
        entries = [await self._entry(item, employee) for item in page.items]
        more = page.more
        size = 0
        for keep in range(len(entries), 0, -1):  # newest first, until the byte bound
            size += len(frames.encode(entries[keep - 1]))
            if size > MAX_PAGE_BYTES and keep < len(entries):
                entries, more = entries[keep:], True
                break
        return {"type": "history", "id": frame_id, "conversation": conversation, "messages": entries,
                "more": more, "before": entries[0]["seq"] if entries else None}

    async def _entry(self, item: HistoryItem, employee: EmployeeInfo) -> frames.Frame:
        urls: list[str | None] = []
        for att in item.attachments:
            url = None if item.withheld or not att.sha256 else await self._file_url(att, employee.address)
            if url is None and att.sha256 and not item.withheld:  # fetched from the journal when asked for
                url = f"{self.prefix}/history/{quote(item.id, safe='')}/{att.sha256}"
            urls.append(url)
        return frames.history_entry(item, employee.address, urls)

    async def _history_file(self, request: web.Request) -> web.StreamResponse:
        """A file of a history message not (or no longer) in the web store: from the journal's blobs,
        for the employee the conversation is assigned to; then kept in the store like a pushed file."""
        _, employee = self._require(request)
        sha = request.match_info["sha256"]
        found = None
        if self.ctx.history is not None and len(sha) == 64 and len(request.match_info["message"]) <= frames.MAX_ID:
            found = await self.ctx.history.attachment(employee.id, request.match_info["message"], sha)
        if found is None or await self.uploads.keep(found, self._owner(employee.address)) is None:
            return web.json_response({"error": "no such file for you"}, status=404)
        return await self.uploads.serve(sha, self._owner(employee.address))

    async def _acked(self, reply: frames.Frame, receipt: Receipt, key: str) -> frames.Frame:
        """A reply's ack says what the client is sent (redacted, with disclaimers) and the verdict."""
        employee = self.ctx.employees.get(key)
        if self.ctx.history is None or employee is None:
            return reply
        item = await self.ctx.history.message(employee.id, receipt.message_id)
        if item is not None and item.mine:
            reply["message"] = await self._entry(item, employee)
        return reply


def create(name: str, settings: Mapping[str, Any], ctx: ChannelContext) -> WebDeskChannel:
    """The employee desk, with routes under `settings.path` (default /desk)."""
    return create_channel(WebDeskChannel, name, settings, ctx, network="webdesk", side="staff", default_path="/desk")

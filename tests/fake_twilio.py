"""A fake Twilio REST API on loopback that also plays Twilio's side of the webhooks.

It serves what the SMS adapter calls (`POST /2010-04-01/Accounts/{AccountSid}/Messages.json`
with HTTP Basic auth, media downloads) with Twilio's documented answers and error codes
(21211 invalid To, 21610 unsubscribed, 21617 body over 1600 characters, 20003 auth, 20429),
injects faults (429 with Retry-After, 5xx), and signs and POSTs inbound messages and status
callbacks as Twilio does: `X-Twilio-Signature` = base64(HMAC-SHA1(auth token, URL + each
sorted parameter name and value)), computed here independently of the twilio library.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from tests.fake_server import FakeServer

E164 = re.compile(r"^\+[1-9]\d{6,14}$")


@dataclass
class Fault:
    """An injected answer for the next Messages request; status 0 lets that request through."""

    status: int
    code: int | None = None
    retry_after: str | None = None
    delay: float = 0.0


def signature(auth_token: str, url: str, params: list[tuple[str, str]]) -> str:
    """Twilio's documented webhook signature (HMAC-SHA1, base64)."""
    data = url + "".join(k + v for k, v in sorted(params))
    return base64.b64encode(hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()).decode()


@dataclass
class FakeTwilio(FakeServer):
    account_sid: str = "AC" + "0" * 31 + "1"
    auth_token: str = "twilio-auth-token"
    number: str = "+15005550006"
    unsubscribed: set[str] = field(default_factory=set)
    sent: list[dict[str, Any]] = field(default_factory=list)
    requests: int = 0
    media: dict[str, tuple[bytes, str, bool]] = field(default_factory=dict)
    downloads: list[str] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    answer_delay: float = 0.0
    """Seconds to hold the answer after a message is accepted (its status callbacks can go first)."""

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/2010-04-01/Accounts/{sid}/Messages.json", self._create)
        app.router.add_get("/2010-04-01/Accounts/{sid}/Messages/{msid}/Media/{mid}", self._media)

    def fail_next(self, status: int, code: int | None = None, retry_after: str | None = None, times: int = 1) -> None:
        self.faults.extend(Fault(status, code, retry_after) for _ in range(times))

    @staticmethod
    def error(status: int, code: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
        return web.json_response({"code": code, "message": message, "status": status,
                                  "more_info": f"https://www.twilio.com/docs/errors/{code}"}, status=status,
                                 headers=headers)

    def _authorized(self, request: web.Request) -> bool:
        expected = "Basic " + base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        return hmac.compare_digest(request.headers.get("Authorization", ""), expected) \
            and request.match_info["sid"] == self.account_sid

    async def _create(self, request: web.Request) -> web.Response:
        self.requests += 1
        if not self._authorized(request):
            return self.error(401, 20003, "Authenticate")
        fault = await self._next_fault()
        if fault is not None and fault.status:
            if fault.status >= 500 and fault.code is None:
                return web.Response(status=fault.status, text="Internal Server Error")
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else None
            return self.error(fault.status, fault.code or 20429, "Too Many Requests", headers)
        posted = await request.post()
        form = {k: v for k, v in posted.items() if isinstance(v, str)}
        media_urls = [v for v in posted.getall("MediaUrl", []) if isinstance(v, str)]
        to, body = form.get("To", ""), form.get("Body", "")
        if not E164.match(to):
            return self.error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        if not form.get("From") and not form.get("MessagingServiceSid"):
            return self.error(400, 21603, "A 'From' or 'MessagingServiceSid' parameter is required")
        if not body and not media_urls:
            return self.error(400, 21602, "Message body is required.")
        if len(body) > 1600:
            return self.error(400, 21617, "The concatenated message body exceeds the 1600 character limit.")
        if to in self.unsubscribed:
            return self.error(400, 21610, "Attempt to send to unsubscribed recipient")
        if len(media_urls) > 10:
            return self.error(400, 21623, "Number of media files exceeds allowed limit")
        fetched: list[tuple[str, bytes]] = []
        assert self._session is not None
        for media_url in media_urls:  # Twilio fetches each MediaUrl when it accepts the message
            async with self._session.get(media_url) as resp:
                if resp.status != 200:
                    return self.error(400, 11200, f"HTTP retrieval failure: {media_url} answered {resp.status}")
                fetched.append((resp.content_type, await resp.read()))
        sid = ("MM" if media_urls else "SM") + secrets.token_hex(16)
        self.sent.append({**form, "_sid": sid, "_media": fetched})  # type: ignore[dict-item]
        if self.answer_delay:
            await asyncio.sleep(self.answer_delay)
        return web.json_response({"sid": sid, "account_sid": self.account_sid, "to": to, "from": form.get("From"),
                                  "body": body, "status": "queued", "num_segments": "1", "error_code": None,
                                  "api_version": "2010-04-01"}, status=201)

    def add_media(self, message_sid: str, media_sid: str, data: bytes, mime: str, declare_length: bool = True) -> str:
        """A media item as Twilio stores it; its URL (what `MediaUrl<N>` carries)."""
        self.media[media_sid] = (data, mime, declare_length)
        return f"{self.url}/2010-04-01/Accounts/{self.account_sid}/Messages/{message_sid}/Media/{media_sid}"

    async def _media(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return self.error(401, 20003, "Authenticate")
        mid = request.match_info["mid"]
        self.downloads.append(mid)
        if mid not in self.media:
            return self.error(404, 20404, "The requested resource was not found")
        data, mime, declared = self.media[mid]
        if declared:
            return web.Response(body=data, content_type=mime)
        resp = web.StreamResponse(headers={"Content-Type": mime})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for i in range(0, len(data), 65536):
            await resp.write(data[i:i + 65536])
        await resp.write_eof()
        return resp

    # --- Twilio's side of the webhooks ---------------------------------------------------

    def inbound(self, sender: str, body: str, *, sid: str | None = None, media: list[tuple[str, str]] = ()) -> list[tuple[str, str]]:
        """The form of an incoming message to our number; `media` is (url, content type) pairs."""
        sid = sid or "SM" + secrets.token_hex(16)
        params = [("ToCountry", "US"), ("SmsMessageSid", sid), ("NumMedia", str(len(media))), ("SmsSid", sid),
                  ("SmsStatus", "received"), ("Body", body), ("To", self.number), ("NumSegments", "1"),
                  ("MessageSid", sid), ("AccountSid", self.account_sid), ("From", sender), ("ApiVersion", "2010-04-01")]
        for i, (url, mime) in enumerate(media):
            params += [(f"MediaUrl{i}", url), (f"MediaContentType{i}", mime)]
        return params

    def status(self, sid: str, status: str, to: str, error_code: str = "") -> list[tuple[str, str]]:
        params = [("SmsSid", sid), ("SmsStatus", status), ("MessageStatus", status), ("To", to), ("MessageSid", sid),
                  ("AccountSid", self.account_sid), ("From", self.number), ("ApiVersion", "2010-04-01")]
        if error_code:
            params.append(("ErrorCode", error_code))
        return params

    async def post(self, url: str, params: list[tuple[str, str]], sign: str | None = "auto") -> tuple[int, str]:
        """POST a form to the adapter as Twilio does; `sign=None` leaves the header out."""
        assert self._session is not None
        headers = {"Content-Type": "application/x-www-form-urlencoded", "I-Twilio-Idempotency-Token": secrets.token_hex(8)}
        if sign == "auto":
            headers["X-Twilio-Signature"] = signature(self.auth_token, url, params)
        elif sign is not None:
            headers["X-Twilio-Signature"] = sign
        async with self._session.post(url, data=urlencode(params).encode(), headers=headers) as resp:
            return resp.status, await resp.text()

    async def deliver_statuses(self, sid: str, *states: str, error_code: str = "") -> list[int]:
        """POST the status callbacks of a sent message to the StatusCallback it was sent with."""
        sent = next(s for s in self.sent if s["_sid"] == sid)
        return [(await self.post(sent["StatusCallback"], self.status(sid, st, sent["To"],
                                                                     error_code if st in ("failed", "undelivered") else "")))[0]
                for st in states]


__all__ = ["FakeTwilio", "signature"]

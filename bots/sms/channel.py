"""Twilio SMS/MMS channel (client side): signed webhooks in, Messages API out.

Every POST is bounded, checked against `X-Twilio-Signature` (HMAC-SHA1 of the URL Twilio
called plus the sorted form parameters) before it is read as a message, journaled through
`deliver`, and only then answered, so Twilio redelivers anything not yet journaled.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from dataclasses import replace
from typing import Any, Mapping
from urllib.parse import parse_qsl, urlsplit

import aiohttp
from aiohttp import web
from multidict import MultiDict
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from bots.base import Channel, ChannelContext, DeliveryError, Permanent, Retryable
from bots.sms.media import MMS_MAX_BYTES, MMS_MAX_FILES, MediaShelf
from bots.sms.optout import OptOuts, keyword
from bots.sms.parse import parse_form, parse_status
from bots.sms.segments import messages
from bots.sms.settings import SmsSettings
from bots.webhooks.body import BodyTooLarge, read_body
from bots.webhooks.channel import WebhookChannel, content_to_send
from bots.webhooks.intake import Item, MediaRef, raw_event
from bots.webhooks.settings import require_client_side
from relay.model import Attachment, Outgoing

log = logging.getLogger(__name__)

TWILIO_MAX_BODY = 64 * 1024
"""A Twilio messaging webhook is a small form (Body ≤ 1600 chars, ≤ 10 media URLs)."""
RETRY_CODES = frozenset({20429, 20500, 20503, 30001})
"""Too many requests, internal error, service unavailable, queue overflow: try again."""
UNSUBSCRIBED = 21610
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'


def twilio_failure(status: int, doc: Any, retry_after: str | None) -> DeliveryError:
    """Map a Messages API error answer to what the outbox should do about it."""
    err = doc if isinstance(doc, dict) else {}
    code = err.get("code") if isinstance(err.get("code"), int) else None
    message = str(err.get("message") or f"HTTP {status}")[:300]
    reason = f"Twilio error {code}: {message}" if code is not None else f"Twilio HTTP {status}: {message}"
    if status == 429 or status >= 500 or code in RETRY_CODES:
        return Retryable(reason, after=_seconds(retry_after))
    return Permanent(reason)


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


class SmsChannel(WebhookChannel):
    """One Twilio number (or Messaging Service), as a client-side channel."""

    def __init__(self, name: str, settings: SmsSettings, ctx: ChannelContext) -> None:
        super().__init__(name, ctx, 0.0, settings.timeout)
        self.settings = settings
        self.optouts = OptOuts(ctx.state)
        self._validator = RequestValidator(settings.auth_token)
        self._client: Client | None = None
        base = settings.webhook_url or (ctx.public_url.rstrip("/") + settings.path if ctx.public_url else "")
        self.webhook_url = base
        self.status_url = f"{base}/status" if base else ""
        self.media = MediaShelf()

    async def stop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.http_client.close()  # type: ignore[union-attr]
        await super().stop()

    # --- receiving -------------------------------------------------------------------------

    async def handle_message(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, status_only=False)

    async def handle_status(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, status_only=True)

    async def _handle(self, request: web.Request, status_only: bool) -> web.StreamResponse:
        try:
            body = await read_body(request, "Twilio", TWILIO_MAX_BODY)
        except BodyTooLarge as exc:
            return await self._refusals.answer(request, exc)
        called = (self.webhook_url + ("/status" if status_only else "") + _query(request)) if self.webhook_url else ""
        status = await self.receive(body, request.headers.get("X-Twilio-Signature"), called or str(request.url),
                                    status_only)
        if status == 200:
            return web.Response(text=EMPTY_TWIML, content_type="text/xml")
        text = {400: "not a form (UTF-8, application/x-www-form-urlencoded)", 403: "bad X-Twilio-Signature",
                503: "not started"}.get(status, "not journaled; retry")
        return web.Response(status=status, text=text)

    async def receive(self, body: bytes, signature: str | None, url: str, status_only: bool = False) -> int:
        """Handle one webhook POST body Twilio sent to `url`; the HTTP status to answer with."""
        try:
            pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False, max_num_fields=200)
        except (UnicodeDecodeError, ValueError):
            log.warning("%s: webhook refused: body is not a UTF-8 form", self.name)
            return 400
        form = MultiDict(pairs)
        if not signature or not self._validator.validate(url, form, signature):
            log.warning("%s: webhook refused: bad or missing X-Twilio-Signature", self.name)
            return 403
        deliver = self._deliver
        if deliver is None:
            return 503
        flat = {k: form.getone(k) for k in form.keys()}
        if flat.get("AccountSid") not in (None, self.settings.account_sid):
            items = [Item(raw_event(self.name, body, "webhook for another AccountSid"))]
        else:
            items = [await self._first_part(parse_status(self.name, flat, body) if status_only
                                            else parse_form(self.name, flat, body))]
        return await self._journal(deliver, lambda: items, "webhook not journaled; answering 500 so Twilio retries")

    async def _first_part(self, item: Item) -> Item:
        """A status of a split text's later part names the first part's sid (its delivery's id);
        the part's own sid stays in the raw form journaled with it."""
        inb = item.inbound
        if inb.kind != "event" or not inb.reply_to:
            return item
        first = await self.ctx.state.get(f"part:{inb.reply_to}")
        return replace(item, inbound=replace(inb, reply_to=first)) if first else item

    async def _take(self, deliver: Any, item: Item) -> None:
        """A STOP/START is remembered before the message is journaled (and so acknowledged)."""
        word = keyword(item.inbound.text) if item.inbound.kind == "message" else ""
        if word:
            await self.optouts.record(item.inbound.chat, word)
            log.info("%s: keyword %s from a client (message %s)", self.name, word.upper(), item.inbound.platform_id)
        await super()._take(deliver, item)

    async def _fetch(self, ref: MediaRef) -> Attachment:
        """Media URL → bytes, refused unread when its Content-Length is over the limit."""
        limit = self.ctx.max_attachment_bytes
        if not ref.media_id.startswith(("https://", "http://")):
            return Attachment(ref.name, ref.mime, 0, refused="no usable MediaUrl in the webhook")
        same_host = urlsplit(ref.media_id).netloc == urlsplit(self.settings.api_url).netloc
        headers = {"Authorization": _basic(self.settings.account_sid, self.settings.auth_token)} if same_host else {}
        try:
            async with self._http().get(ref.media_id, headers=headers) as resp:
                if resp.status >= 500 or resp.status == 429:
                    raise Retryable(f"media download: HTTP {resp.status}")
                if resp.status != 200:
                    return Attachment(ref.name, ref.mime, 0, platform_ref=ref.media_id,
                                      refused=f"media download failed: HTTP {resp.status}")
                mime = resp.headers.get("Content-Type", ref.mime).split(";")[0].strip() or ref.mime
                if resp.content_length is not None and resp.content_length > limit:
                    return Attachment(ref.name, mime, resp.content_length, platform_ref=ref.media_id,
                                      refused=f"too large: {resp.content_length} bytes over the {limit}-byte limit (not downloaded)")
                data = bytearray()
                async for chunk in resp.content.iter_chunked(65536):
                    data += chunk
                    if len(data) > limit:
                        return Attachment(ref.name, mime, len(data), platform_ref=ref.media_id,
                                          refused=f"too large: over the {limit}-byte limit (download stopped)")
        except (asyncio.TimeoutError, aiohttp.ClientError) as exc:
            raise Retryable(f"media download: {type(exc).__name__}") from exc
        return Attachment.of(ref.name, mime, bytes(data), platform_ref=ref.media_id)

    # --- sending ---------------------------------------------------------------------------

    async def send(self, out: Outgoing) -> str:
        """Send the text as one or more Twilio messages (cut on SMS segment boundaries).

        Returns the MessageSid of the first; each part is remembered once accepted, so a retry
        after a partial send does not repeat what went out.
        """
        if out.kind == "delete":
            raise Permanent("SMS cannot delete a message already sent to the client")
        why = await self.optouts.opted_out(out.to.user)
        if why:
            raise Permanent(why)
        text, files = content_to_send(out)
        media = self._media_urls(files)
        bodies = messages(text, self.settings.max_segments) or [""]
        sids: list[str] = []
        for i, part in enumerate(bodies):
            sids.append(await self._post_once(f"sent:{out.message_id}:{i}", out.to.user, part, media if i == 0 else []))
            if i:  # a later part's status callback is about the delivery the first sid names
                await self.ctx.state.put(f"part:{sids[i]}", sids[0])
        return sids[0]

    def _media_urls(self, files: list[Attachment]) -> list[str]:
        """URLs Twilio fetches the files of an MMS from; Permanent when they cannot go as one."""
        if not files:
            return []
        if not self.webhook_url:
            raise Permanent(f"{files[0].name}: MMS needs `public_url` (or `webhook_url`) so Twilio can fetch the file")
        if len(files) > MMS_MAX_FILES or sum(f.size or len(f.data) for f in files) > MMS_MAX_BYTES:
            raise Permanent(f"MMS takes at most {MMS_MAX_FILES} files and {MMS_MAX_BYTES} bytes in all; "
                            f"this message has {len(files)} files")
        missing = [f.name for f in files if not f.data]
        if missing:
            raise Permanent(f"{missing[0]}: attachment bytes are not available")
        return [f"{self.webhook_url}/media/{self.media.put(f.data, f.mime or 'application/octet-stream')}" for f in files]

    async def _post_once(self, key: str, to: str, body: str, media: list[str]) -> str:
        done = await self.ctx.state.get(key)
        if done is not None:
            return done
        form: dict[str, object] = {"To": to, "Body": body}
        if media:
            form["MediaUrl"] = media
        if self.settings.messaging_service_sid:
            form["MessagingServiceSid"] = self.settings.messaging_service_sid
        else:
            form["From"] = self.settings.from_number
        if self.status_url:
            form["StatusCallback"] = self.status_url
        try:
            doc = await self._api("POST", f"/2010-04-01/Accounts/{self.settings.account_sid}/Messages.json", form)
        except Permanent as exc:
            if str(UNSUBSCRIBED) in exc.reason:
                await self.optouts.record(to, "stop")
            raise
        sid = doc.get("sid")
        if not isinstance(sid, str) or not sid:
            raise Retryable("Twilio accepted the request but returned no sid")
        await self.ctx.state.put(key, sid)
        return sid

    def _twilio(self) -> Client:
        if self._client is None:
            self._client = Client(self.settings.account_sid, self.settings.auth_token,
                                  http_client=AsyncTwilioHttpClient())
        return self._client

    async def _api(self, method: str, path: str, data: Mapping[str, object]) -> dict[str, Any]:
        url = self.settings.api_url + path
        try:
            async with asyncio.timeout(self.settings.timeout):
                resp = await self._twilio().request_async(method, url, data=_form(data))  # type: ignore[arg-type]
        except TimeoutError as exc:
            raise Retryable(f"Twilio API timed out after {self.settings.timeout} s") from exc
        except aiohttp.ClientError as exc:
            raise Retryable(f"Twilio API unreachable: {type(exc).__name__}") from exc
        try:
            doc = json.loads(resp.text)
        except ValueError:
            doc = None
        if 200 <= resp.status_code < 300 and isinstance(doc, dict):
            return doc
        if 200 <= resp.status_code < 300:
            raise Retryable(f"Twilio API answered HTTP {resp.status_code} with an unreadable body")
        headers = resp.headers or {}
        raise twilio_failure(resp.status_code, doc, headers.get("Retry-After"))


def _form(data: Mapping[str, object]) -> MultiDict[str]:
    """The request form, a list value as the repeated parameter Twilio expects (`MediaUrl`)."""
    form: MultiDict[str] = MultiDict()
    for key, value in data.items():
        for one in value if isinstance(value, list) else [value]:
            form.add(key, str(one))
    return form


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _query(request: web.Request) -> str:
    return f"?{request.query_string}" if request.query_string else ""


def create(name: str, settings: Mapping[str, Any], ctx: ChannelContext) -> Channel:
    """Build the channel and mount its webhooks: messages at `path`, status callbacks at `path`/status."""
    require_client_side(name, "SMS", ctx)
    channel = SmsChannel(name, SmsSettings.parse(name, settings), ctx)
    ctx.app.router.add_post(channel.settings.path, channel.handle_message)
    ctx.app.router.add_post(channel.settings.path + "/status", channel.handle_status)
    ctx.app.router.add_get(channel.settings.path + "/media/{token}", channel.media.handle)
    return channel

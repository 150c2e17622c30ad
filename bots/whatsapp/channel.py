"""WhatsApp Cloud API channel (client side): signed webhooks in, Graph API messages out.

Every POST is checked against `X-Hub-Signature-256` before it is read, journaled through
`deliver`, and only then answered 200, so Meta redelivers anything not yet journaled.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import logging
from dataclasses import dataclass, replace
from typing import Any, Mapping

import aiohttp
from aiohttp import web

from bots.base import (
    Channel,
    ChannelConfigError,
    ChannelContext,
    DeliveryError,
    Permanent,
    Retryable,
)
from bots.webhooks.channel import WebhookChannel, content_to_send, mount
from bots.webhooks.body import WHATSAPP_MAX_BODY, BodyTooLarge, read_body
from bots.webhooks.intake import Item, MediaRef
from bots.whatsapp.parse import parse_size, parse_webhook
from bots.webhooks.settings import refuse_unknown_settings, require_client_side, required_setting, timeout_setting
from relay.model import Attachment, Outgoing

log = logging.getLogger(__name__)

WINDOW_HOURS = 24.0
TEXT_LIMIT = 4096
CAPTION_LIMIT = 1024
RATE_LIMIT_AFTER: dict[int, float] = {4: 60.0, 80007: 60.0, 130429: 1.0, 131048: 60.0, 131056: 6.0}
"""Throttling error codes (app, account, throughput, spam, pair rate limits) and a sensible wait."""
TRANSIENT_CODES: frozenset[int] = frozenset({1, 2, 131000, 131016})
REENGAGEMENT = 131047
SEND_LIMITS: dict[str, int] = {"image": 5 << 20, "video": 16 << 20, "audio": 16 << 20, "document": 100 << 20}
IMAGE_MIMES = frozenset({"image/jpeg", "image/png"})
VIDEO_MIMES = frozenset({"video/mp4", "video/3gpp"})
AUDIO_MIMES = frozenset({"audio/aac", "audio/amr", "audio/mpeg", "audio/mp4", "audio/ogg"})


class ReEngagementRequired(Permanent):
    """Meta refused a free-form message: the 24-hour window is closed (error 131047)."""


@dataclass(frozen=True)
class Template:
    name: str
    language: str
    components: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True)
class WhatsAppSettings:
    phone_number_id: str
    access_token: str
    app_secret: str
    verify_token: str
    graph_url: str = "https://graph.facebook.com"
    api_version: str = "v21.0"
    template: Template | None = None
    path: str = ""
    timeout: float = 30.0

    @staticmethod
    def parse(name: str, settings: Mapping[str, Any]) -> WhatsAppSettings:
        refuse_unknown_settings(name, settings, WhatsAppSettings)
        template = None
        raw_template = settings.get("template")
        if raw_template is not None:
            if not isinstance(raw_template, Mapping) or not raw_template.get("name") or not raw_template.get("language"):
                raise ChannelConfigError(f"channel {name}: `template` needs `name` and `language`")
            components = raw_template.get("components") or ()
            if not isinstance(components, (list, tuple)):
                raise ChannelConfigError(f"channel {name}: `template.components` must be a list")
            template = Template(str(raw_template["name"]), str(raw_template["language"]), tuple(components))
        timeout = timeout_setting(name, settings, 30.0)
        return WhatsAppSettings(
            phone_number_id=required_setting(name, settings, "phone_number_id"),
            access_token=required_setting(name, settings, "access_token"),
            app_secret=required_setting(name, settings, "app_secret"),
            verify_token=required_setting(name, settings, "verify_token"),
            graph_url=str(settings.get("graph_url") or "https://graph.facebook.com").rstrip("/"),
            api_version=str(settings.get("api_version") or "v21.0"),
            template=template,
            path=str(settings.get("path") or f"/webhooks/{name}"),
            timeout=timeout,
        )


def signature_ok(app_secret: str, body: bytes, header: str | None) -> bool:
    """`X-Hub-Signature-256: sha256=<hex>` is the HMAC-SHA256 of the raw body (constant time)."""
    if not header or not header.startswith("sha256="):
        return False
    expected = hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), header[len("sha256="):].strip().lower().encode())


def graph_failure(status: int, doc: Any, retry_after: str | None) -> DeliveryError:
    """Map a Graph API error answer to what the outbox should do about it."""
    err = doc.get("error") if isinstance(doc, dict) and isinstance(doc.get("error"), dict) else {}
    code = err.get("code") if isinstance(err.get("code"), int) else None
    message = str(err.get("message") or f"HTTP {status}")
    details = err.get("error_data", {}).get("details") if isinstance(err.get("error_data"), dict) else None
    reason = f"WhatsApp error {code}: {message}" if code is not None else f"WhatsApp HTTP {status}: {message}"
    if details:
        reason += f" ({details})"
    header_after = _seconds(retry_after)
    if code in RATE_LIMIT_AFTER:
        return Retryable(reason, after=max(header_after or 0.0, RATE_LIMIT_AFTER[code]))
    if code == REENGAGEMENT:
        return ReEngagementRequired(reason)
    if status >= 500 or status == 429 or code in TRANSIENT_CODES:
        return Retryable(reason, after=header_after)
    return Permanent(reason)


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def send_type(mime: str, size: int) -> str:
    """The WhatsApp message type for a file; too big for its kind → sent as a document."""
    base = mime.split(";")[0].strip().lower()
    if base in IMAGE_MIMES:
        kind = "image"
    elif base in VIDEO_MIMES:
        kind = "video"
    elif base in AUDIO_MIMES:
        kind = "audio"
    else:
        kind = "document"
    return kind if size <= SEND_LIMITS[kind] else "document"


def split_text(text: str, limit: int) -> list[str]:
    return [text[i:i + limit] for i in range(0, len(text), limit)] or [""]


def declared_digest(value: Any) -> bytes | None:
    """A SHA-256 as Meta writes it (hex in media lookups, base64 in webhooks); None if unusable."""
    if not isinstance(value, str) or not value.strip():
        return None
    value = value.strip()
    try:
        raw = bytes.fromhex(value) if len(value) == 64 else base64.b64decode(value.replace("-", "+").replace("_", "/")
                                                                            + "=" * (-len(value) % 4), validate=True)
    except (ValueError, binascii.Error):
        return None
    return raw if len(raw) == 32 else None


def digest_problem(data: bytes, **declared: Any) -> str:
    """'' when the bytes match every usable declared SHA-256, else what differs (for the record)."""
    actual = hashlib.sha256(data).digest()
    wrong = [f"{where} declared {digest.hex()}" for where, value in declared.items()
             if (digest := declared_digest(value)) is not None and digest != actual]
    if not wrong:
        return ""
    return f"sha256 mismatch: the downloaded bytes hash to {actual.hex()}, but the {' and the '.join(wrong)}"


NUMBERS: web.AppKey[dict[str, dict[str, "WhatsAppChannel"]]] = web.AppKey("whatsapp_numbers", dict)
"""Per webhook path, the channels (by phone_number_id) of the one Meta app that posts there."""


class WhatsAppChannel(WebhookChannel):
    """One WhatsApp Business phone number, as a client-side channel."""

    def __init__(self, name: str, settings: WhatsAppSettings, ctx: ChannelContext) -> None:
        super().__init__(name, ctx, WINDOW_HOURS, settings.timeout)
        self.settings = settings
        self.numbers: dict[str, WhatsAppChannel] = {settings.phone_number_id: self}
        """The channels sharing this webhook URL, by phone_number_id (this one at least)."""

    # --- receiving -------------------------------------------------------------------------

    async def handle_verify(self, request: web.Request) -> web.Response:
        """Meta's subscription check: echo `hub.challenge` when the verify token matches."""
        q = request.query
        token = q.get("hub.verify_token", "")
        if q.get("hub.mode") == "subscribe" and hmac.compare_digest(token.encode(), self.settings.verify_token.encode()):
            return web.Response(text=q.get("hub.challenge", ""), content_type="text/plain")
        return web.Response(status=403, text="verification failed")

    async def handle_post(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await read_body(request, "WhatsApp", WHATSAPP_MAX_BODY)
        except BodyTooLarge as exc:
            return await self._refusals.answer(request, exc)
        status = await self.receive(body, request.headers.get("X-Hub-Signature-256"))
        return web.Response(status=status, text={200: "ok", 401: "bad signature", 503: "not started"}.get(status, "error"))

    async def receive(self, body: bytes, signature: str | None) -> int:
        """Handle one webhook POST body; returns the HTTP status to answer Meta with."""
        if not signature_ok(self.settings.app_secret, body, signature):
            log.warning("%s: webhook refused: bad or missing X-Hub-Signature-256", self.name)
            return 401
        if self._deliver is None:
            return 503
        status = 200
        for target, items in self._route(parse_webhook(self.name, body)):
            deliver = target._deliver
            if deliver is None:
                status = max(status, 503)
                continue
            status = max(status, await target._journal(deliver, lambda items=items: items,
                                                       "webhook not journaled; answering 500 so Meta redelivers"))
        return status

    def _route(self, items: list[Item]) -> list[tuple[WhatsAppChannel, list[Item]]]:
        """Items by the channel configured for the number they were sent to
        (`metadata.phone_number_id`); those for a number no channel has are left out and logged."""
        routed: dict[str, tuple[WhatsAppChannel, list[Item]]] = {}
        unknown: dict[str, int] = {}
        for item in items:
            target = self.numbers.get(item.account) if item.account else self
            if target is None:
                unknown[item.account] = unknown.get(item.account, 0) + 1
                continue
            if target is not self:
                inb = item.inbound
                item = replace(item, inbound=replace(inb, channel=target.name, sender=replace(inb.sender, channel=target.name)))
            routed.setdefault(target.name, (target, []))[1].append(item)
        for number, count in unknown.items():
            log.warning("%s: %d webhook item(s) for phone_number_id %s not journaled: no whatsapp channel is configured "
                        "for that number (add one with that phone_number_id and this channel's path to receive them)",
                        self.name, count, number[:40])
        return list(routed.values())

    async def _fetch(self, ref: MediaRef) -> Attachment:
        """media id → URL (size checked here) → bytes. Transient failures raise (Meta retries)."""
        if not ref.media_id:
            return Attachment(ref.name, ref.mime, 0, refused="no media id in the webhook")
        try:
            info = await self._graph("GET", f"/{ref.media_id}")
        except Retryable:
            raise
        except DeliveryError as exc:
            return Attachment(ref.name, ref.mime, 0, platform_ref=ref.media_id, refused=f"media lookup failed: {exc}")
        mime = str(info.get("mime_type") or ref.mime)
        url = info.get("url")
        size = parse_size(info.get("file_size"))
        limit = self.ctx.max_attachment_bytes
        if size is not None and size > limit:
            return Attachment(ref.name, mime, size, platform_ref=ref.media_id,
                              refused=f"too large: {size} bytes over the {limit}-byte limit (not downloaded)")
        if not isinstance(url, str) or not url:
            return Attachment(ref.name, mime, size or 0, platform_ref=ref.media_id, refused="media lookup gave no url")
        got = await self._download(ref, url, mime, limit)
        if got.refused:
            return got
        problem = digest_problem(got.data, **{"media lookup": info.get("sha256"), "webhook": ref.declared_sha256})
        if problem:
            log.warning("%s: media %s: %s; kept as received and flagged for review", self.name, ref.media_id[:80], problem)
            return replace(got, integrity=problem)
        return got

    async def _download(self, ref: MediaRef, url: str, mime: str, limit: int) -> Attachment:
        try:
            async with self._http().get(url, headers=self._auth()) as resp:
                if resp.status >= 500:
                    raise Retryable(f"media download: HTTP {resp.status}")
                if resp.status != 200:
                    return Attachment(ref.name, mime, 0, platform_ref=ref.media_id,
                                      refused=f"media download failed: HTTP {resp.status}")
                if resp.content_length is not None and resp.content_length > limit:
                    return Attachment(ref.name, mime, resp.content_length, platform_ref=ref.media_id,
                                      refused=f"too large: {resp.content_length} bytes over the {limit}-byte limit")
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
        """Send to the client; outside the 24-hour window the approved template goes instead.

        Returns the wamid of the first message sent, or `template:<wamid>` when the template
        was sent in place of the employee's message (so the journal's delivery names it).
        """
        if out.kind == "delete":
            raise Permanent("WhatsApp cannot delete a message already sent to the client")
        to = out.to.user
        if not await self.window.is_open(to):
            return await self._send_template(out, "the 24-hour customer-service window is closed")
        try:
            return await self._send_content(out)
        except ReEngagementRequired as exc:
            return await self._send_template(out, exc.reason)

    async def _send_template(self, out: Outgoing, why: str) -> str:
        template = self.settings.template
        if template is None:
            raise Permanent(f"outside WhatsApp's 24-hour customer-service window ({why}) and no `template` is configured")
        payload: dict[str, Any] = {"name": template.name, "language": {"code": template.language}}
        if template.components:
            payload["components"] = [dict(c) for c in template.components]
        body = self._envelope(out.to.user, "template", payload)
        wamid = await self._post_once(f"sent:{out.message_id}:template", body)
        log.info("%s: message %s sent as template %s (%s)", self.name, out.message_id, template.name, why)
        return f"template:{wamid}"

    async def _send_content(self, out: Outgoing) -> str:
        text, files = content_to_send(out)
        caption_on_first = bool(
            files and text and len(text) <= CAPTION_LIMIT and send_type(files[0].mime, files[0].size) != "audio"
        )
        bodies: list[tuple[str, dict[str, Any] | Attachment]] = []
        if text and not caption_on_first:
            bodies += [("text", {"body": chunk, "preview_url": False}) for chunk in split_text(text, TEXT_LIMIT)]
        bodies += [("file", a) for a in files]
        ids: list[str] = []
        for index, (what, content) in enumerate(bodies):
            key = f"sent:{out.message_id}:{index}"
            if what == "text":
                assert isinstance(content, dict)
                envelope = self._envelope(out.to.user, "text", content)
            else:
                assert isinstance(content, Attachment)
                caption = text if caption_on_first and index == 0 else ""
                envelope = await self._media_envelope(key, out.to.user, content, caption)
            if index == 0 and out.reply_to:
                envelope["context"] = {"message_id": out.reply_to}
            ids.append(await self._post_once(key, envelope))
        return ids[0]

    async def _media_envelope(self, key: str, to: str, file: Attachment, caption: str) -> dict[str, Any]:
        kind = send_type(file.mime, file.size)
        if file.size > SEND_LIMITS["document"]:
            raise Permanent(f"{file.name}: {file.size} bytes is over WhatsApp's 100 MB document limit")
        if not file.data:
            raise Permanent(f"{file.name}: attachment bytes are not available")
        media_id = await self.ctx.state.get(f"{key}:media")
        if media_id is None:
            form = aiohttp.FormData()
            form.add_field("messaging_product", "whatsapp")
            form.add_field("type", file.mime)
            form.add_field("file", file.data, filename=file.name, content_type=file.mime)
            uploaded = await self._graph("POST", f"/{self.settings.phone_number_id}/media", form=form)
            media_id = str(uploaded.get("id") or "")
            if not media_id:
                raise Retryable("WhatsApp media upload gave no id")
            await self.ctx.state.put(f"{key}:media", media_id)
        content: dict[str, Any] = {"id": media_id}
        if caption and kind != "audio":
            content["caption"] = caption
        if kind == "document":
            content["filename"] = file.name
        return self._envelope(to, kind, content)

    @staticmethod
    def _envelope(to: str, kind: str, content: Mapping[str, Any]) -> dict[str, Any]:
        return {"messaging_product": "whatsapp", "recipient_type": "individual", "to": to, "type": kind, kind: content}

    async def _post_once(self, key: str, envelope: dict[str, Any]) -> str:
        """POST a message unless an earlier attempt of the same part already went out."""
        done = await self.ctx.state.get(key)
        if done is not None:
            return done
        answer = await self._graph("POST", f"/{self.settings.phone_number_id}/messages", json_body=envelope)
        messages = answer.get("messages")
        wamid = messages[0].get("id") if isinstance(messages, list) and messages and isinstance(messages[0], dict) else None
        if not isinstance(wamid, str) or not wamid:
            raise Retryable("WhatsApp accepted the request but returned no message id")
        await self.ctx.state.put(key, wamid)
        return wamid

    # --- Graph API -------------------------------------------------------------------------

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.settings.access_token}"}

    async def _graph(self, method: str, path: str, *, json_body: Any = None, form: aiohttp.FormData | None = None) -> dict[str, Any]:
        url = f"{self.settings.graph_url}/{self.settings.api_version}{path}"
        try:
            async with self._http().request(method, url, json=json_body, data=form, headers=self._auth()) as resp:
                raw = await resp.read()
                status, retry_after = resp.status, resp.headers.get("Retry-After")
        except asyncio.TimeoutError as exc:
            raise Retryable(f"WhatsApp API timed out after {self.settings.timeout} s") from exc
        except aiohttp.ClientError as exc:
            raise Retryable(f"WhatsApp API unreachable: {type(exc).__name__}: {exc}") from exc
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = None
        if 200 <= status < 300 and isinstance(doc, dict) and "error" not in doc:
            return doc
        if 200 <= status < 300:
            raise Retryable(f"WhatsApp API answered HTTP {status} with an unreadable body")
        raise graph_failure(status, doc, retry_after)


def create(name: str, settings: Mapping[str, Any], ctx: ChannelContext) -> Channel:
    """Build the channel and mount its webhook (GET verification, POST notifications)."""
    require_client_side(name, "WhatsApp", ctx)
    channel = WhatsAppChannel(name, WhatsAppSettings.parse(name, settings), ctx)
    paths = ctx.app.setdefault(NUMBERS, {}) if NUMBERS not in ctx.app else ctx.app[NUMBERS]
    path, number = channel.settings.path, channel.settings.phone_number_id
    shared = paths.get(path)
    if shared is None:
        paths[path] = channel.numbers
        mount(ctx.app, path, channel.handle_verify, channel.handle_post)
        return channel
    first = next(iter(shared.values()))
    if (first.settings.app_secret, first.settings.verify_token) != (channel.settings.app_secret, channel.settings.verify_token):
        raise ChannelConfigError(f"channel {name}: shares the webhook path {path} with channel {first.name} but not its "
                                 "app_secret and verify_token; one URL is one Meta app (give it its own `path`)")
    if number in shared:
        raise ChannelConfigError(f"channel {name}: phone_number_id {number} is already channel {shared[number].name}'s")
    shared[number] = channel
    channel.numbers = shared
    return channel

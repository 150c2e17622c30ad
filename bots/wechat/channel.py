"""WeChat Official Account channel (client side): XML pushes in, customer-service API out.

A push is verified (URL signature, or `msg_signature` and AES in safe mode), journaled
through `deliver`, and only then answered `success`; WeChat's three retries dedupe by `MsgId`
(events by sender + `CreateTime` + event).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from dataclasses import dataclass, replace
from typing import Any, Awaitable, Callable, Mapping, TypeVar

import aiohttp
from aiohttp import web

from bots.base import (
    Channel,
    ChannelConfigError,
    ChannelContext,
    DeliveryError,
    Permanent,
    Retryable,
    StateStore,
)
from bots.webhooks.channel import WebhookChannel, content_to_send, mount
from bots.webhooks.body import WECHAT_MAX_BODY, BodyTooLarge, read_body
from bots.webhooks.intake import Item, MediaRef, raw_event
from bots.wechat.crypto import CryptoError, WeChatCrypto, sha1_signature, signature_matches
from bots.wechat.parse import encrypt_field, parse_push
from bots.webhooks.settings import refuse_unknown_settings, require_client_side, required_setting, timeout_setting
from relay.model import Attachment, Outgoing

log = logging.getLogger(__name__)
T = TypeVar("T")

WINDOW_HOURS = 48.0
WINDOW_REASON = "outside WeChat's 48-hour customer-service window"
TEXT_LIMIT_BYTES = 2048
SIGNATURE_WINDOW = 300.0
"""Seconds a push's signed `timestamp` may be from now: WeChat's own SDKs allow 5 minutes.
The signature covers only token, timestamp and nonce (and `Encrypt`), so without a window a
signed URL seen once could be replayed with any body for ever."""
TOKEN_ERRORS: frozenset[int] = frozenset({40001, 40014, 42001})
RETRY_AFTER: dict[int, float] = {-1: 1.0, 45009: 60.0}
UPLOAD_LIMITS: dict[str, int] = {"image": 10 << 20, "voice": 2 << 20}
MEDIA_TYPES: dict[str, str] = {
    "image/jpeg": "image", "image/png": "image", "image/gif": "image", "image/bmp": "image",
    "audio/amr": "voice", "audio/mpeg": "voice", "audio/mp3": "voice",
}
"""What a customer-service message can carry. Video needs a separate thumbnail upload
(`thumb_media_id`) relay does not have, so video files are refused with that reason."""


class TokenRejected(Retryable):
    """The access_token was refused as invalid or expired (40001, 40014, 42001)."""


def wechat_failure(errcode: int, errmsg: str) -> DeliveryError:
    """Map a WeChat `errcode` to what the outbox should do about it."""
    reason = f"WeChat error {errcode}: {errmsg}"
    if errcode in TOKEN_ERRORS:
        return TokenRejected(reason)
    if errcode in RETRY_AFTER:
        return Retryable(reason, after=RETRY_AFTER[errcode])
    if errcode == 45015:
        return Permanent(f"{WINDOW_REASON} ({reason})")
    return Permanent(reason)


@dataclass(frozen=True)
class WeChatSettings:
    app_id: str
    app_secret: str
    token: str
    encoding_aes_key: str | None = None
    api_url: str = "https://api.weixin.qq.com"
    path: str = ""
    timeout: float = 10.0
    signature_window: float = SIGNATURE_WINDOW

    @staticmethod
    def parse(name: str, settings: Mapping[str, Any]) -> WeChatSettings:
        refuse_unknown_settings(name, settings, WeChatSettings)
        aes = settings.get("encoding_aes_key") or None
        if aes is not None and (not isinstance(aes, str) or len(aes) != 43):
            raise ChannelConfigError(f"channel {name}: `encoding_aes_key` must be the 43-character key from the WeChat console")
        timeout = timeout_setting(name, settings, 10.0)
        window = settings.get("signature_window", SIGNATURE_WINDOW)
        if isinstance(window, bool) or not isinstance(window, (int, float)) or not 0 < window <= 86400:
            raise ChannelConfigError(f"channel {name}: `signature_window` must be a number of seconds "
                                     f"between 1 and 86400 (default {SIGNATURE_WINDOW:g})")
        return WeChatSettings(
            app_id=required_setting(name, settings, "app_id"),
            app_secret=required_setting(name, settings, "app_secret"),
            token=required_setting(name, settings, "token"),
            encoding_aes_key=aes,
            api_url=str(settings.get("api_url") or "https://api.weixin.qq.com").rstrip("/"),
            path=str(settings.get("path") or f"/webhooks/{name}"),
            timeout=timeout,
            signature_window=float(window),
        )


def split_utf8(text: str, limit: int) -> list[str]:
    """Chunks of at most `limit` UTF-8 bytes, never splitting a character."""
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    for ch in text:
        n = len(ch.encode())
        if size + n > limit and current:
            chunks.append("".join(current))
            current, size = [], 0
        current.append(ch)
        size += n
    if current:
        chunks.append("".join(current))
    return chunks


class AccessTokens:
    """The access_token, fetched once and reused until shortly before it expires.

    Kept in the channel's durable state as well: WeChat caps token fetches per day, and a
    fetch invalidates the previous token for every other holder.
    """

    KEY = "access_token"
    MARGIN = 300.0

    def __init__(self, fetch: Callable[[], Awaitable[tuple[str, float]]], state: StateStore) -> None:
        self._fetch = fetch
        self._state = state
        self._token: str | None = None
        self._expires = 0.0
        self._lock = asyncio.Lock()
        self.fetches = 0

    async def get(self, stale: str | None = None) -> str:
        """A valid token; `stale` names a token the API just refused, forcing a refresh."""
        async with self._lock:
            if self._token is None:
                await self._load()
            usable = self._token is not None and time.time() < self._expires - self.MARGIN
            if usable and self._token != stale:
                assert self._token is not None
                return self._token
            token, expires_in = await self._fetch()
            self.fetches += 1
            self._token, self._expires = token, time.time() + expires_in
            await self._state.put(self.KEY, json.dumps({"token": token, "expires": self._expires}))
            return token

    async def _load(self) -> None:
        raw = await self._state.get(self.KEY)
        try:
            saved = json.loads(raw) if raw else None
            if isinstance(saved, dict):
                self._token, self._expires = str(saved["token"]), float(saved["expires"])
        except (ValueError, KeyError, TypeError):
            self._token = None


class WeChatChannel(WebhookChannel):
    """One WeChat Official Account, as a client-side channel."""

    def __init__(self, name: str, settings: WeChatSettings, ctx: ChannelContext) -> None:
        super().__init__(name, ctx, WINDOW_HOURS, settings.timeout)
        self.settings = settings
        self.crypto = WeChatCrypto(settings.encoding_aes_key, settings.app_id) if settings.encoding_aes_key else None
        self.tokens = AccessTokens(self._fetch_token, ctx.state)

    # --- receiving -------------------------------------------------------------------------

    def _url_signature_ok(self, q: Mapping[str, str]) -> bool:
        expected = sha1_signature(self.settings.token, q.get("timestamp", ""), q.get("nonce", ""))
        return signature_matches(expected, q.get("signature"))

    def _stale(self, q: Mapping[str, str]) -> str | None:
        """Why the signed `timestamp` is outside the window (None when it is inside)."""
        value = q.get("timestamp", "").strip()
        if not value.isdigit() or len(value) > 12:
            return "signature timestamp missing or not a number"
        age = time.time() - int(value)
        if abs(age) > self.settings.signature_window:
            return (f"signature timestamp is {abs(age):.0f} s {'old' if age > 0 else 'in the future'}, "
                    f"outside the {self.settings.signature_window:g} s window (signature_window)")
        return None

    async def handle_verify(self, request: web.Request) -> web.Response:
        """WeChat's server check: echo `echostr` when the URL signature is right and fresh."""
        if self._url_signature_ok(request.query) and self._stale(request.query) is None:
            return web.Response(text=request.query.get("echostr", ""), content_type="text/plain")
        return web.Response(status=403, text="signature mismatch or outside the time window")

    async def handle_post(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await read_body(request, "WeChat", WECHAT_MAX_BODY)
        except BodyTooLarge as exc:
            return await self._refusals.answer(request, exc)
        status, why = await self.receive_checked(request.query, body)
        return web.Response(status=status, text="success" if status == 200 else why)

    def authenticate(self, q: Mapping[str, str], body: bytes) -> Item | str:
        """The push as an Item when it is authentic and fresh, else why it is refused."""
        if q.get("encrypt_type", "raw") != "aes":
            if self.crypto is not None:
                return "plaintext push refused: safe mode (encoding_aes_key) is configured"
            if not self._url_signature_ok(q):
                return "bad signature"
            return self._stale(q) or parse_push(self.name, body)
        encrypted = encrypt_field(body)
        if encrypted is None:
            # The URL signature does not cover the body: without `Encrypt` and its
            # msg_signature, nothing says WeChat sent this body.
            return "encrypted push without an Encrypt element (msg_signature cannot be checked)"
        expected = sha1_signature(self.settings.token, q.get("timestamp", ""), q.get("nonce", ""), encrypted)
        if not signature_matches(expected, q.get("msg_signature")):
            return "bad msg_signature"
        stale = self._stale(q)
        if stale is not None:
            return stale
        if self.crypto is None:
            log.error("%s: encrypted push journaled unread: configure encoding_aes_key (safe mode)", self.name)
            return Item(raw_event(self.name, body, "encrypted push, but no encoding_aes_key is configured"))
        try:
            xml = self.crypto.decrypt(encrypted)
        except CryptoError as exc:
            log.error("%s: signed push journaled unread: cannot decrypt (%s)", self.name, exc)
            return Item(raw_event(self.name, body, f"cannot decrypt: {exc}"))
        item = parse_push(self.name, xml, raw=body)
        return replace(item, inbound=replace(item.inbound, decrypted=xml))

    async def receive(self, q: Mapping[str, str], body: bytes) -> int:
        """Handle one push; returns the HTTP status (200 is answered with `success`)."""
        return (await self.receive_checked(q, body))[0]

    async def receive_checked(self, q: Mapping[str, str], body: bytes) -> tuple[int, str]:
        """Handle one push: the HTTP status and, when it is not 200, why."""
        item = self.authenticate(q, body)
        if isinstance(item, str):
            log.warning("%s: push refused, nothing journaled: %s", self.name, item)
            return (403 if "window" in item or "timestamp" in item else 401), item
        deliver = self._deliver
        if deliver is None:
            return 503, "not started"
        status = await self._journal(deliver, lambda: (item,), "push not journaled; answering 500 so WeChat retries")
        return status, "" if status == 200 else "error"

    async def _fetch(self, ref: MediaRef) -> Attachment:
        """Temporary media by id; a failure is journaled as a refusal (WeChat retries only
        three times within seconds, so holding the message back could lose it)."""
        if not ref.media_id:
            return Attachment(ref.name, ref.mime, 0, refused="no MediaId in the push")
        try:
            return await self._with_token(lambda token: self._download_media(token, ref))
        except DeliveryError as exc:
            return Attachment(ref.name, ref.mime, 0, platform_ref=ref.media_id, refused=f"media download failed: {exc}")

    async def _download_media(self, token: str, ref: MediaRef) -> Attachment:
        url = f"{self.settings.api_url}/cgi-bin/media/get"
        limit = self.ctx.max_attachment_bytes
        try:
            async with self._http().get(url, params={"access_token": token, "media_id": ref.media_id}) as resp:
                ctype = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
                if resp.status >= 500:
                    raise Retryable(f"HTTP {resp.status}")
                if ctype in ("application/json", "text/plain", "text/json"):
                    doc = self._json(await resp.content.read(65536))
                    video_url = doc.get("video_url")
                    if isinstance(video_url, str) and video_url:
                        return await self._stream(video_url, None, ref, ref.mime, limit)
                    raise Permanent(f"unexpected answer: {str(doc)[:200]}")
                if resp.status != 200:
                    raise Permanent(f"HTTP {resp.status}")
                name = _disposition_name(resp.headers.get("Content-Disposition", "")) or ref.name
                return await self._read_capped(resp, Attachment(name, ctype or ref.mime, 0, platform_ref=ref.media_id), limit)
        except (asyncio.TimeoutError, aiohttp.ClientError) as exc:
            raise Retryable(f"{type(exc).__name__}") from exc

    async def _stream(self, url: str, params: Mapping[str, str] | None, ref: MediaRef, mime: str, limit: int) -> Attachment:
        async with self._http().get(url, params=params) as resp:
            if resp.status != 200:
                raise Permanent(f"HTTP {resp.status} from the video URL")
            ctype = resp.headers.get("Content-Type", "").split(";")[0].strip().lower() or mime
            return await self._read_capped(resp, Attachment(ref.name, ctype, 0, platform_ref=ref.media_id), limit)

    @staticmethod
    async def _read_capped(resp: aiohttp.ClientResponse, shell: Attachment, limit: int) -> Attachment:
        if resp.content_length is not None and resp.content_length > limit:
            return replace(shell, size=resp.content_length,
                           refused=f"too large: {resp.content_length} bytes over the {limit}-byte limit (not downloaded)")
        data = bytearray()
        async for chunk in resp.content.iter_chunked(65536):
            data += chunk
            if len(data) > limit:
                return replace(shell, size=len(data), refused=f"too large: over the {limit}-byte limit (download stopped)")
        return Attachment.of(shell.name, shell.mime, bytes(data), platform_ref=shell.platform_ref)

    # --- sending ---------------------------------------------------------------------------

    async def send(self, out: Outgoing) -> str:
        """Send through the customer-service API; returns `custom:<message id>` (the API gives no id).

        Past the 48-hour window nothing is sent and `Permanent` says why.
        """
        if out.kind == "delete":
            raise Permanent("WeChat cannot recall a customer-service message")
        to = out.to.user
        if not await self.window.is_open(to):
            last = await self.window.last(to)
            when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(last)) if last else "never"
            raise Permanent(f"{WINDOW_REASON}: the client last wrote {when}; they must write again before a reply can be sent")
        text, files = content_to_send(out)
        kinds = [self._media_kind(a) for a in files]
        parts: list[tuple[str, Any]] = [("text", chunk) for chunk in split_utf8(text, TEXT_LIMIT_BYTES)] if text else []
        parts += list(zip(kinds, files))
        for index, (kind, content) in enumerate(parts):
            key = f"sent:{out.message_id}:{index}"
            if await self.ctx.state.get(key) is not None:
                continue
            if kind == "text":
                body: dict[str, Any] = {"touser": to, "msgtype": "text", "text": {"content": content}}
            else:
                media_id = await self._upload(key, kind, content)
                body = {"touser": to, "msgtype": kind, kind: {"media_id": media_id}}
            await self._with_token(lambda token, body=body: self._api("POST", "/cgi-bin/message/custom/send", token, json_body=body))
            await self.ctx.state.put(key, "sent")
        return f"custom:{out.message_id}"

    @staticmethod
    def _media_kind(file: Attachment) -> str:
        base = file.mime.split(";")[0].strip().lower()
        kind = MEDIA_TYPES.get(base)
        if base.startswith("video/"):
            raise Permanent(f"{file.name}: WeChat customer-service video messages need a thumbnail image; send a link instead")
        if kind is None:
            raise Permanent(f"WeChat customer-service messages cannot carry {file.mime} files ({file.name})")
        if file.size > UPLOAD_LIMITS[kind]:
            raise Permanent(f"{file.name}: {file.size} bytes is over WeChat's {UPLOAD_LIMITS[kind] >> 20} MB {kind} limit")
        if not file.data:
            raise Permanent(f"{file.name}: attachment bytes are not available")
        return kind

    async def _upload(self, key: str, kind: str, file: Attachment) -> str:
        saved = await self.ctx.state.get(f"{key}:media")
        if saved is not None:
            return saved

        async def upload(token: str) -> dict[str, Any]:
            form = aiohttp.FormData()
            form.add_field("media", file.data, filename=file.name, content_type=file.mime)
            return await self._api("POST", "/cgi-bin/media/upload", token, params={"type": kind}, form=form)

        answer = await self._with_token(upload)
        media_id = answer.get("media_id")
        if not isinstance(media_id, str) or not media_id:
            raise Retryable("WeChat media upload gave no media_id")
        await self.ctx.state.put(f"{key}:media", media_id)
        return media_id

    # --- API -------------------------------------------------------------------------------

    async def _with_token(self, call: Callable[[str], Awaitable[T]]) -> T:
        """Run `call` with the access_token; on an expired-token code refresh once and retry."""
        token = await self.tokens.get()
        try:
            return await call(token)
        except TokenRejected as exc:
            log.info("%s: access_token refused (%s); refreshing", self.name, exc.reason)
            token = await self.tokens.get(stale=token)
            return await call(token)

    async def _fetch_token(self) -> tuple[str, float]:
        params = {"grant_type": "client_credential", "appid": self.settings.app_id, "secret": self.settings.app_secret}
        doc = await self._api("GET", "/cgi-bin/token", None, params=params)
        token, expires_in = doc.get("access_token"), doc.get("expires_in", 7200)
        if not isinstance(token, str) or not token or not isinstance(expires_in, (int, float)):
            raise Retryable("WeChat token answer without access_token")
        return token, float(expires_in)

    @staticmethod
    def _json(raw: bytes) -> dict[str, Any]:
        try:
            doc = json.loads(raw)
        except ValueError:
            raise Retryable("WeChat API answered with an unreadable body") from None
        if not isinstance(doc, dict):
            raise Retryable("WeChat API answered with an unexpected body")
        code = doc.get("errcode", 0)
        if isinstance(code, int) and code != 0:
            raise wechat_failure(code, str(doc.get("errmsg", "")))
        return doc

    async def _api(self, method: str, path: str, token: str | None, *, params: Mapping[str, str] | None = None,
                   json_body: Any = None, form: aiohttp.FormData | None = None) -> dict[str, Any]:
        query = dict(params or {})
        if token is not None:
            query["access_token"] = token
        data: Any = form
        headers = {}
        if json_body is not None:
            data = json.dumps(json_body, ensure_ascii=False).encode()
            headers["Content-Type"] = "application/json; charset=utf-8"
        try:
            async with self._http().request(method, f"{self.settings.api_url}{path}", params=query, data=data, headers=headers) as resp:
                raw = await resp.read()
                status = resp.status
        except asyncio.TimeoutError as exc:
            raise Retryable(f"WeChat API timed out after {self.settings.timeout} s") from exc
        except aiohttp.ClientError as exc:
            raise Retryable(f"WeChat API unreachable: {type(exc).__name__}: {exc}") from exc
        if status >= 500 or status == 429:
            raise Retryable(f"WeChat API HTTP {status}")
        if status >= 400:
            raise Permanent(f"WeChat API HTTP {status}: {raw[:200]!r}")
        return self._json(raw)


_FILENAME = re.compile(r'filename="?([^";]+)"?')


def _disposition_name(header: str) -> str:
    match = _FILENAME.search(header)
    return match.group(1).strip().rsplit("/", 1)[-1] if match else ""


def create(name: str, settings: Mapping[str, Any], ctx: ChannelContext) -> Channel:
    """Build the channel and mount its push URL (GET server check, POST messages)."""
    require_client_side(name, "WeChat", ctx)
    try:
        channel = WeChatChannel(name, WeChatSettings.parse(name, settings), ctx)
    except ValueError as exc:
        if isinstance(exc, ChannelConfigError):
            raise
        raise ChannelConfigError(f"channel {name}: {exc}") from None
    mount(ctx.app, channel.settings.path, channel.handle_verify, channel.handle_post)
    return channel

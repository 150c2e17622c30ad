"""Slack staff channel: Events API in (signed, journaled before the 200), Web API out.

Each client conversation is a thread in one configured channel: the relay opens it with a
root message naming the client, posts the client's messages in it, and an employee's reply
in the thread goes to the client with no command. Sends go through slack_sdk's
AsyncWebClient; 429 and 5xx become Retryable with Slack's Retry-After.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Mapping
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from slack_sdk.errors import SlackApiError, SlackRequestError
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from bots.base import Channel, ChannelConfigError, ChannelContext, DeliveryError, Permanent, Retryable
from bots.slack.events import parse_event, parse_json, pid
from bots.slack.settings import SlackSettings
from bots.slack.threads import ThreadMap
from bots.webhooks.body import BodyTooLarge, read_body
from bots.webhooks.channel import WebhookChannel
from bots.webhooks.intake import Item, MediaRef, raw_event
from relay.model import Attachment, Outgoing

log = logging.getLogger(__name__)

SLACK_MAX_BODY = 1024 * 1024
"""An Events API body is one event (message text up to 40,000 characters, files by URL)."""
TEXT_LIMIT = 40000
"""Slack truncates a message past 40,000 characters; a longer text goes as several posts."""
RETRY_ERRORS = frozenset({"ratelimited", "rate_limited", "internal_error", "fatal_error", "service_unavailable",
                          "request_timeout"})


def escape(text: str) -> str:
    """Slack reads `&`, `<` and `>` as markup; a client's text is sent as plain characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_failure(exc: SlackApiError) -> DeliveryError:
    resp = exc.response
    status = getattr(resp, "status_code", 0) or 0
    data = getattr(resp, "data", None)
    error = str(data.get("error")) if isinstance(data, dict) and data.get("error") else f"HTTP {status}"
    headers = {str(k).lower(): v for k, v in (getattr(resp, "headers", None) or {}).items()}
    after = headers.get("retry-after")
    if isinstance(after, list):
        after = after[0] if after else None
    reason = f"Slack error {error}" + (f" (HTTP {status})" if status and status != 200 else "")
    if status == 429 or status >= 500 or error in RETRY_ERRORS:
        try:
            return Retryable(reason, after=max(0.0, float(after)) if after is not None else None)
        except ValueError:
            return Retryable(reason)
    return Permanent(reason)


class SlackChannel(WebhookChannel):
    """One Slack channel where employees answer clients, one thread per conversation."""

    def __init__(self, name: str, settings: SlackSettings, ctx: ChannelContext) -> None:
        super().__init__(name, ctx, 0.0, settings.timeout)
        self.settings = settings
        self.threads = ThreadMap(ctx.state)
        self._verifier = SignatureVerifier(settings.signing_secret)
        self._client: AsyncWebClient | None = None

    async def stop(self) -> None:
        await super().stop()
        client, self._client = self._client, None
        if client is not None and client.session is not None:
            await client.session.close()

    def _web(self) -> AsyncWebClient:
        if self._client is None:
            self._client = AsyncWebClient(token=self.settings.bot_token, base_url=self.settings.api_url,
                                          timeout=int(max(1, self.settings.timeout)),
                                          session=aiohttp.ClientSession(), retry_handlers=[])
        return self._client

    # --- receiving -------------------------------------------------------------------------

    async def handle_post(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await read_body(request, "Slack", SLACK_MAX_BODY)
        except BodyTooLarge as exc:
            return await self._refusals.answer(request, exc)
        status, answer = await self.receive(body, request.headers.get("X-Slack-Request-Timestamp"),
                                            request.headers.get("X-Slack-Signature"))
        if isinstance(answer, dict):
            return web.json_response(answer, status=status)
        return web.Response(status=status, text=answer)

    async def receive(self, body: bytes, timestamp: str | None, signature: str | None) -> tuple[int, str | dict[str, str]]:
        """Handle one Events API POST; the HTTP status and body to answer Slack with."""
        if not timestamp or not signature or not self._verifier.is_valid(body, timestamp, signature):
            log.warning("%s: event refused: bad, missing or stale X-Slack-Signature", self.name)
            return 401, "bad or stale X-Slack-Signature (v0, 5-minute window)"
        doc = parse_json(body)
        if doc is not None and doc.get("type") == "url_verification":
            return 200, {"challenge": str(doc.get("challenge", ""))}
        deliver = self._deliver
        if deliver is None:
            return 503, "not started"
        if doc is None or doc.get("type") != "event_callback":
            item: Item | None = Item(raw_event(self.name, body, "not an event_callback"))
        else:
            item = await parse_event(self.name, self.settings.channel, body, doc, self.threads.conversation_of)
        if item is None:
            return 200, "ok"
        status = await self._journal(deliver, lambda: [item], "event not journaled; answering 500 so Slack retries")
        return status, "ok" if status == 200 else "not journaled; retry"

    async def _fetch(self, ref: MediaRef) -> Attachment:
        """A shared file, refused unread when Slack's declared size is over the limit."""
        limit = self.ctx.max_attachment_bytes
        if ref.declared_size is not None and ref.declared_size > limit:
            return Attachment(ref.name, ref.mime, ref.declared_size, platform_ref=ref.media_id,
                              refused=f"too large: {ref.declared_size} bytes over the {limit}-byte limit (not downloaded)")
        host = urlsplit(ref.media_id).netloc
        if host not in self.settings.file_hosts and host != urlsplit(self.settings.api_url).netloc:
            return Attachment(ref.name, ref.mime, 0, platform_ref=ref.media_id,
                              refused=f"file URL host {host[:80]!r} is not a Slack file host (not downloaded)")
        headers = {"Authorization": f"Bearer {self.settings.bot_token}"}
        try:
            async with self._http().get(ref.media_id, headers=headers, allow_redirects=False) as resp:
                if resp.status >= 500 or resp.status == 429:
                    raise Retryable(f"file download: HTTP {resp.status}")
                if resp.status != 200 or (resp.content_type == "text/html" and "html" not in ref.mime):
                    return Attachment(ref.name, ref.mime, 0, platform_ref=ref.media_id,
                                      refused=f"file download failed: HTTP {resp.status} (does the app have files:read?)")
                if resp.content_length is not None and resp.content_length > limit:
                    return Attachment(ref.name, ref.mime, resp.content_length, platform_ref=ref.media_id,
                                      refused=f"too large: {resp.content_length} bytes over the {limit}-byte limit")
                data = bytearray()
                async for chunk in resp.content.iter_chunked(65536):
                    data += chunk
                    if len(data) > limit:
                        return Attachment(ref.name, ref.mime, len(data), platform_ref=ref.media_id,
                                          refused=f"too large: over the {limit}-byte limit (download stopped)")
        except (asyncio.TimeoutError, aiohttp.ClientError) as exc:
            raise Retryable(f"file download: {type(exc).__name__}") from exc
        return Attachment.of(ref.name, ref.mime, bytes(data), platform_ref=ref.media_id)

    # --- sending ---------------------------------------------------------------------------

    async def send(self, out: Outgoing) -> str:
        """Post into the conversation's thread (edit or delete what was posted); the `C…:ts` id."""
        try:
            if out.kind == "edit" and out.edits:
                return await self._update(out)
            if out.kind == "delete":
                return await self._delete(out)
            return await self._post(out)
        except SlackApiError as exc:
            raise slack_failure(exc) from exc
        except (SlackRequestError, aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise Retryable(f"Slack API unreachable: {type(exc).__name__}") from exc

    def _compose(self, out: Outgoing) -> str:
        lines: list[str] = []
        if out.kind == "notice":
            return f"<@{out.to.user}> {escape(out.text)}" if out.to.user[:1] in ("U", "W") else escape(out.text)
        if out.action not in ("", "allow"):
            lines.append(f"[{out.action}: {', '.join(out.rules)}]" if out.rules else f"[{out.action}]")
        if out.origin and out.client and out.origin.user != out.client.user:
            lines.append(f"{escape(out.origin.display or out.origin.user)}:")
        for att in out.attachments:
            if att.refused or not att.data:
                lines.append(f"[file not delivered: {escape(att.name)} ({escape(att.refused or 'no content')})]")
        if out.text:
            lines.append(("(edited) " if out.kind == "edit" else "") + escape(out.text))
        return "\n".join(lines)

    async def _thread(self, out: Outgoing) -> str | None:
        if not out.conversation:
            return None
        if out.kind == "notice":
            return await self.threads.known(out.conversation)
        client = out.client or out.origin
        title = f"{client.display or client.user} ({client.channel})" if client else out.conversation

        async def open_thread() -> str:
            answer = await self._web().chat_postMessage(channel=self.settings.channel,
                                                        text=f"New conversation: {escape(title)}")
            return str(answer["ts"])

        return await self.threads.thread_for(out.conversation, open_thread)

    async def _post(self, out: Outgoing) -> str:
        thread = await self._thread(out)
        text = self._compose(out)
        files = [a for a in out.attachments if a.data and not a.refused]
        if not text.strip() and not files:
            raise Permanent(f"slack {out.kind}: nothing to send (no text and no files)")
        ids: list[str] = []
        if text.strip():
            chunks = [text[i:i + TEXT_LIMIT] for i in range(0, len(text), TEXT_LIMIT)]
            for n, chunk in enumerate(chunks):
                key = f"sent:{out.message_id}:{out.kind}:text" + (f"{n}" if n else "")
                ids.append(await self._once(key, lambda c=chunk: self._post_text(c, thread)))
        for i, file in enumerate(files):
            ids.append(await self._once(f"sent:{out.message_id}:{out.kind}:file{i}", lambda f=file: self._upload(f, thread)))
        return ids[0]

    async def _once(self, key: str, step: Any) -> str:
        done = await self.ctx.state.get(key)
        if done is not None:
            return done
        value = await step()
        await self.ctx.state.put(key, value)
        return value

    async def _post_text(self, text: str, thread: str | None) -> str:
        kwargs: dict[str, Any] = {"channel": self.settings.channel, "text": text, "unfurl_links": False}
        if thread:
            kwargs["thread_ts"] = thread
        answer = await self._web().chat_postMessage(**kwargs)
        return pid(str(answer.get("channel") or self.settings.channel), str(answer["ts"]))

    async def _upload(self, file: Attachment, thread: str | None) -> str:
        kwargs: dict[str, Any] = {"channel": self.settings.channel, "file": file.data, "filename": file.name,
                                  "title": file.name}
        if thread:
            kwargs["thread_ts"] = thread
        answer = await self._web().files_upload_v2(**kwargs)
        shared = answer.get("files") or []
        return f"file:{shared[0]['id']}" if shared else f"file:{file.sha256[:16]}"

    @staticmethod
    def _target(platform_id: str | None) -> tuple[str, str]:
        channel, _, ts = (platform_id or "").partition(":")
        if not channel or not ts or channel == "file":
            raise Permanent(f"slack: {platform_id!r} is not a message the relay posted (files cannot be edited)")
        return channel, ts

    async def _update(self, out: Outgoing) -> str:
        channel, ts = self._target(out.edits)
        text = self._compose(out).replace("(edited) ", "", 1)
        if len(text) > TEXT_LIMIT:
            raise Permanent(f"slack edit: {len(text)} characters is over Slack's {TEXT_LIMIT}-character message limit")
        await self._web().chat_update(channel=channel, ts=ts, text=text or "(empty)")
        return pid(channel, ts)

    async def _delete(self, out: Outgoing) -> str:
        channel, ts = self._target(out.edits)
        await self._web().chat_delete(channel=channel, ts=ts)
        return pid(channel, ts)


def create(name: str, settings: Mapping[str, Any], ctx: ChannelContext) -> Channel:
    """Build the channel and mount its Events API request URL."""
    if ctx.side != "staff":
        raise ChannelConfigError(f"channel {name}: slack is a staff-side network (side: staff)", setting="side")
    channel = SlackChannel(name, SlackSettings.parse(name, settings), ctx)
    ctx.app.router.add_post(channel.settings.path, channel.handle_post)
    return channel

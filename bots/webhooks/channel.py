"""The part of a client-side webhook channel (WhatsApp, WeChat) that does not depend on the network.

Both journal each webhook item once (fetching its media first and opening the service window),
answer the network 500 when journaling failed so it redelivers, keep one HTTP session, and send
the same normalized content.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import replace

import aiohttp
from aiohttp import web

from bots.base import ChannelContext, Deliver, Permanent
from bots.webhooks.service_window import ServiceWindow
from bots.webhooks.intake import Intake, Item, MediaRef
from bots.webhooks.body import Refusals
from relay.model import Attachment, Outgoing


class WebhookChannel:
    """Base of one client-side webhook channel `name`: intake, service window and HTTP session."""

    def __init__(self, name: str, ctx: ChannelContext, window_hours: float, timeout: float) -> None:
        self.name = name
        self.ctx = ctx
        self.window = ServiceWindow(ctx.state, window_hours)
        self._timeout = timeout
        self._intake = Intake()
        self._refusals = Refusals()
        self._deliver: Deliver | None = None
        self._session: aiohttp.ClientSession | None = None

    async def start(self, deliver: Deliver) -> None:
        self._deliver = deliver

    async def stop(self) -> None:
        self._deliver = None
        self._refusals.drop()
        await self._intake.drain()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _journal(self, deliver: Deliver, items: Callable[[], Iterable[Item]], failure: str) -> int:
        """Journal each item once; the HTTP status to answer: 200, or 500 (logged as `failure`)."""
        try:
            for item in items():
                await self._intake.once(item.inbound.platform_id, lambda item=item: self._take(deliver, item))
        except Exception:
            logging.getLogger(type(self).__module__).exception("%s: %s", self.name, failure)
            return 500
        return 200

    async def _take(self, deliver: Deliver, item: Item) -> None:
        """Fetch media, open the window (the hub may answer before `deliver` returns), journal."""
        attachments = tuple([await self._fetch(ref) for ref in item.media])
        inbound = replace(item.inbound, attachments=attachments) if attachments else item.inbound
        if item.touches_window:
            await self.window.touch(inbound.chat, inbound.sent_at or time.time())
        await deliver(inbound)

    async def _fetch(self, ref: MediaRef) -> Attachment:
        raise NotImplementedError

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._timeout))
        return self._session


def content_to_send(out: Outgoing) -> tuple[str, list[Attachment]]:
    """The text (marked when an edit) and the sendable files of `out`; Permanent when neither."""
    text = f"(edited) {out.text}" if out.kind == "edit" and out.text else out.text
    files = [a for a in out.attachments if not a.refused]
    if not text and not files:
        raise Permanent("nothing to send: empty text and no attachments")
    return text, files


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def mount(app: web.Application, path: str, verify: Handler, post: Handler) -> None:
    """The webhook URL: GET for the network's check, POST for what it pushes."""
    app.router.add_get(path, verify)
    app.router.add_post(path, post)

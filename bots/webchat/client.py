"""The client side of the web chat: a page at /chat and a WebSocket per browser tab (network `webchat`).

Visitors are anonymous; the page makes a random visitor id and keeps it, and that id is the
client's chat on this channel. Messages are acked only after the hub journaled them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aiohttp import web

from bots.base import ChannelConfigError, ChannelContext, Deliver, Retryable
from bots.webchat import frames
from bots.webchat.pages import add_page_routes, check_prefix
from bots.webchat.sockets import Sockets
from bots.webchat.uploads import UnknownUpload, UploadStore
from bots.webchat.wsloop import MAX_FRAME_BYTES, deliver_and_ack, origin_allowed, run_socket
from relay.model import Attachment, Inbound, Outgoing, Party

log = logging.getLogger("relay.webchat.client")

SETTINGS = {"network", "side", "path"}


class WebChatChannel:
    """Channel `name`: routes under `prefix`, sockets keyed by visitor id."""

    def __init__(self, name: str, ctx: ChannelContext, prefix: str) -> None:
        self.name = name
        self.ctx = ctx
        self.prefix = prefix
        self.sockets = Sockets()
        self.uploads = UploadStore(Path(ctx.data_dir) / "uploads", ctx.max_attachment_bytes)
        self._deliver: Deliver | None = None

    def add_routes(self, app: web.Application) -> None:
        add_page_routes(app, self.prefix, "chat.html", ("chat.js", "style.css"))
        app.router.add_get(f"{self.prefix}/ws", self._ws)
        app.router.add_post(f"{self.prefix}/upload", self._upload)
        app.router.add_get(f"{self.prefix}/file/{{sha256}}", self._file)

    async def start(self, deliver: Deliver) -> None:
        self.uploads.prune()
        self._deliver = deliver

    async def stop(self) -> None:
        self._deliver = None
        self.uploads.drop_refused()
        await self.sockets.close()

    async def send(self, out: Outgoing) -> str:
        visitor = out.to.user
        if self.sockets.count(visitor) == 0:
            raise Retryable("visitor offline")
        urls = [await self._file_url(att, visitor) for att in out.attachments]
        frame = frames.client_push(out, urls)
        if await self.sockets.push(visitor, frame) == 0:
            raise Retryable("visitor offline")
        return out.message_id

    async def _file_url(self, attachment: Attachment, visitor: str) -> str | None:
        sha = await self.uploads.keep(attachment, f"chat:{visitor}")
        return None if sha is None else f"{self.prefix}/file/{sha}?visitor={quote(visitor)}"

    def _visitor(self, request: web.Request) -> str:
        visitor = request.query.get("visitor", "")
        if not frames.valid_visitor(visitor):
            raise web.HTTPBadRequest(text="`visitor` must be 1-128 characters of A-Z a-z 0-9 _ . -")
        return visitor

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        visitor = self._visitor(request)
        name = request.query.get("name", "").strip()[:100]
        if not origin_allowed(request, self.ctx.public_url):
            raise web.HTTPForbidden(text="cross-site WebSocket refused")
        ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=MAX_FRAME_BYTES)
        await ws.prepare(request)
        self.sockets.add(visitor, ws)
        try:
            self.ctx.wake(visitor)
            await run_socket(ws, lambda data: self._handle(data, visitor, name))
        finally:
            self.sockets.remove(visitor, ws)
        return ws

    async def _handle(self, data: str, visitor: str, name: str) -> frames.Frame:
        frame = frames.parse(data, ("message",))
        frame_id = frame["id"]
        text = frames.text_field(frame, "text", frames.MAX_TEXT, frame_id)
        ids = frames.upload_ids(frame)
        if not text.strip() and not ids:
            raise frames.FrameError("empty message: give `text` or `attachments`", frame_id)
        owner = f"chat:{visitor}"
        try:
            attachments = tuple([await self.uploads.claim(upload_id, owner) for upload_id in ids])
        except UnknownUpload as exc:
            raise frames.FrameError(f"unknown upload {exc.args[0]!r}; upload the file first", frame_id) from None
        inbound = Inbound(
            channel=self.name,
            platform_id=f"{visitor}:{frame_id}",
            sender=Party(self.name, visitor, name),
            chat=visitor,
            text=text,
            attachments=attachments,
            raw=data.encode("utf-8"),
        )
        reply, accepted = await deliver_and_ack(self._deliver, inbound, frame_id)
        if accepted:
            for upload_id in ids:
                self.uploads.consume(upload_id, owner)
        return reply

    async def _upload(self, request: web.Request) -> web.StreamResponse:
        visitor = self._visitor(request)
        return await self.uploads.receive(request, f"chat:{visitor}")

    async def _file(self, request: web.Request) -> web.StreamResponse:
        visitor = self._visitor(request)
        return await self.uploads.serve(request.match_info["sha256"], f"chat:{visitor}")


def create(name: str, settings: Mapping[str, Any], ctx: ChannelContext) -> WebChatChannel:
    """The client web chat, with routes under `settings.path` (default /chat)."""
    unknown = set(settings) - SETTINGS
    if unknown:
        raise ChannelConfigError(f"channel {name}: unknown setting(s) {', '.join(sorted(unknown))} "
                                 "(webchat knows path)")
    if ctx.side != "client":
        raise ChannelConfigError(f"channel {name}: network webchat is a client-side channel (side: client)")
    prefix = check_prefix(name, settings.get("path", "/chat"), ctx.app)
    channel = WebChatChannel(name, ctx, prefix)
    channel.add_routes(ctx.app)
    return channel

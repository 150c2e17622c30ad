"""The client side of the web chat: a page at /chat and a WebSocket per browser tab (network `webchat`).

Visitors are anonymous; the page makes a random visitor id and keeps it, and that id is the
client's chat on this channel. Messages are acked only after the hub journaled them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from aiohttp import web

from bots.base import ChannelContext
from bots.webchat import frames
from bots.webchat.channel import SETTINGS, SocketChannel, create_channel
from bots.webchat.pages import add_page_routes
from relay.model import Attachment, Inbound, Outgoing, Party

log = logging.getLogger("relay.webchat.client")


class WebChatChannel(SocketChannel):
    """Channel `name`: routes under `prefix`, sockets keyed by visitor id."""

    OWNER = "chat"
    OFFLINE = "visitor offline"

    def add_routes(self, app: web.Application) -> None:
        add_page_routes(app, self.prefix, "chat.html", ("common.js", "chat.js", "style.css"))
        self._add_socket_routes(app)

    def _push_frame(self, out: Outgoing, urls: list[str | None]) -> frames.Frame:
        return frames.client_push(out, urls)

    async def _file_url(self, attachment: Attachment, visitor: str) -> str | None:
        sha = await self.uploads.keep(attachment, self._owner(visitor))
        return None if sha is None else f"{self.prefix}/file/{sha}?visitor={quote(visitor)}"

    def _visitor(self, request: web.Request) -> str:
        visitor = request.query.get("visitor", "")
        if not frames.valid_visitor(visitor):
            raise web.HTTPBadRequest(text="`visitor` must be 1-128 characters of A-Z a-z 0-9 _ . -")
        return visitor

    _key = _visitor

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        visitor = self._visitor(request)
        name = request.query.get("name", "").strip()[:100]
        return await self._serve_socket(request, visitor, lambda data: self._handle(data, visitor, name))

    async def _handle(self, data: str, visitor: str, name: str) -> frames.Frame:
        frame = frames.parse(data, ("message",))
        frame_id = frame["id"]
        text = frames.text_field(frame, "text", frames.MAX_TEXT, frame_id)
        ids = frames.upload_ids(frame)
        if not text.strip() and not ids:
            raise frames.FrameError("empty message: give `text` or `attachments`", frame_id)
        inbound = Inbound(
            channel=self.name,
            platform_id=f"{visitor}:{frame_id}",
            sender=Party(self.name, visitor, name),
            chat=visitor,
            text=text,
            raw=data.encode("utf-8"),
        )
        return await self._deliver_with_uploads(inbound, ids, visitor, frame_id)


def create(name: str, settings: Mapping[str, Any], ctx: ChannelContext) -> WebChatChannel:
    """The client web chat, with routes under `settings.path` (default /chat)."""
    return create_channel(WebChatChannel, name, settings, ctx, network="webchat", side="client", default_path="/chat")

"""What the client chat and the employee desk share: sockets, uploads, sending and delivering.

Both keep one socket set and one upload store per channel and differ only in who the
recipient key is (a visitor id or an employee address) and in the frames they push.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from bots.base import ChannelConfigError, ChannelContext, Deliver, Retryable, unknown_settings
from bots.webchat import frames
from bots.webchat.pages import check_prefix
from bots.webchat.sockets import Sockets
from bots.webchat.uploads import UnknownUpload, UploadStore
from bots.webchat.wsloop import MAX_FRAME_BYTES, Handler, deliver_and_ack, origin_allowed, run_socket
from relay.model import Attachment, Inbound, Outgoing, Receipt

SETTINGS = {"network", "side", "path"}


class SocketChannel:
    """Base of a web channel `name` with routes under `prefix`; sockets keyed by recipient."""

    OWNER = "web"
    OFFLINE = "recipient offline"

    def __init__(self, name: str, ctx: ChannelContext, prefix: str) -> None:
        self.name = name
        self.ctx = ctx
        self.prefix = prefix
        self.sockets = Sockets()
        self.uploads = UploadStore(Path(ctx.data_dir) / "uploads", ctx.max_attachment_bytes)
        self._deliver: Deliver | None = None

    def add_routes(self, app: web.Application) -> None:
        raise NotImplementedError

    def _add_socket_routes(self, app: web.Application) -> None:
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
        key = out.to.user
        if self.sockets.count(key) == 0:
            raise Retryable(self.OFFLINE)
        urls = [await self._file_url(att, key) for att in out.attachments]
        frame = self._push_frame(out, urls)
        if await self.sockets.push(key, frame) == 0:
            raise Retryable(self.OFFLINE)
        return out.message_id

    def _owner(self, key: str) -> str:
        return f"{self.OWNER}:{key}"

    def _push_frame(self, out: Outgoing, urls: list[str | None]) -> frames.Frame:
        raise NotImplementedError

    async def _file_url(self, attachment: Attachment, key: str) -> str | None:
        raise NotImplementedError

    def _key(self, request: web.Request) -> str:
        """The recipient key of an HTTP request, or an HTTP error when it has none."""
        raise NotImplementedError

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        raise NotImplementedError

    def _refusal(self, request: web.Request, key: str) -> tuple[int, str] | None:
        """(close code, reason) when a socket just opened may no longer stay open; None when it may."""
        return None

    async def _serve_socket(self, request: web.Request, key: str, handle: Handler) -> web.StreamResponse:
        if not origin_allowed(request, self.ctx.public_url):
            raise web.HTTPForbidden(text="cross-site WebSocket refused")
        ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=MAX_FRAME_BYTES)
        await ws.prepare(request)
        self.sockets.add(key, ws)
        refusal = self._refusal(request, key)
        if refusal is not None:  # access withdrawn while the handshake was under way
            self.sockets.remove(key, ws)
            await ws.close(code=refusal[0], message=refusal[1].encode())
            return ws
        try:
            self.ctx.wake(key)
            await run_socket(ws, handle)
        finally:
            self.sockets.remove(key, ws)
        return ws

    async def _deliver_with_uploads(self, inbound: Inbound, ids: list[str], key: str, frame_id: str) -> frames.Frame:
        """Claim the frame's uploads into `inbound`, deliver it, and consume them once accepted."""
        owner = self._owner(key)
        try:
            attachments = tuple([await self.uploads.claim(upload_id, owner) for upload_id in ids])
        except UnknownUpload as exc:
            raise frames.FrameError(f"unknown upload {exc.args[0]!r}; upload the file first", frame_id) from None
        reply, receipt = await deliver_and_ack(self._deliver, replace(inbound, attachments=attachments), frame_id)
        if receipt is not None:
            for upload_id in ids:
                self.uploads.consume(upload_id, owner)
            reply = await self._acked(reply, receipt, key)
        return reply

    async def _acked(self, reply: frames.Frame, receipt: Receipt, key: str) -> frames.Frame:
        """The ack of an accepted frame; a channel may add what it knows of the message by now."""
        return reply

    async def _upload(self, request: web.Request) -> web.StreamResponse:
        return await self.uploads.receive(request, self._owner(self._key(request)))

    async def _file(self, request: web.Request) -> web.StreamResponse:
        return await self.uploads.serve(request.match_info["sha256"], self._owner(self._key(request)))


C = TypeVar("C", bound=SocketChannel)


def create_channel(cls: type[C], name: str, settings: Mapping[str, Any], ctx: ChannelContext,
                   *, network: str, side: str, default_path: str) -> C:
    """Check the settings and side of a web channel, then build it and add its routes."""
    unknown = set(settings) - SETTINGS
    if unknown:
        raise unknown_settings(name, "", unknown, SETTINGS)
    if ctx.side != side:
        raise ChannelConfigError(f"channel {name}: network {network} is a {side}-side channel (side: {side})")
    prefix = check_prefix(name, settings.get("path", default_path), ctx.app)
    channel = cls(name, ctx, prefix)
    channel.add_routes(ctx.app)
    return channel

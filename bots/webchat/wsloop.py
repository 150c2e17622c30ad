"""The receive loop both web channels share: one frame at a time, every frame answered.

Frames of one socket are handled in order, so a visitor's messages reach the hub in the order
typed; a malformed frame or a failed deliver gets an error frame and the socket stays open.
"""

from __future__ import annotations

import logging
from typing import Awaitable, Callable

from aiohttp import WSMsgType, web

from bots.base import Deliver
from bots.webchat.frames import Frame, FrameError, encode, error
from relay.model import Inbound, Receipt

log = logging.getLogger("relay.webchat")

NOT_ACCEPTED = "not accepted, please retry"
MAX_FRAME_BYTES = 1024 * 1024

Handler = Callable[[str], Awaitable[Frame]]


def origin_allowed(request: web.Request, public_url: str) -> bool:
    """Refuse cross-site WebSocket handshakes from browsers (they always send Origin)."""
    origin = request.headers.get("Origin")
    if not origin:
        return True
    host = origin.split("://", 1)[-1].rstrip("/")
    public = public_url.split("://", 1)[-1].rstrip("/") if public_url else ""
    return host == request.host or (bool(public) and host == public)


async def run_socket(ws: web.WebSocketResponse, handle: Handler) -> None:
    async for msg in ws:
        if msg.type == WSMsgType.TEXT:
            try:
                reply = await handle(msg.data)
            except FrameError as exc:
                reply = error(str(exc), exc.frame_id)
            except Exception as exc:  # one bad frame must not end the socket for its later frames
                log.error("frame refused by an unexpected %s; socket kept open", type(exc).__name__)
                reply = error("frame not handled (server error); not accepted, please retry", retry=True)
        elif msg.type == WSMsgType.BINARY:
            reply = error("binary frames are not supported; send JSON text frames")
        else:
            continue
        try:
            await ws.send_str(encode(reply))
        except (ConnectionError, RuntimeError):
            return


async def deliver_and_ack(deliver: Deliver | None, inbound: Inbound, frame_id: str) -> tuple[Frame, Receipt | None]:
    """Hand the inbound to the hub; ack only once it returned (journaled or a duplicate).
    The receipt is None when it was not accepted."""
    if deliver is None:
        return error(NOT_ACCEPTED + " (relay is starting)", frame_id, retry=True), None
    try:
        receipt = await deliver(inbound)
    except Exception:
        log.exception("deliver failed for %s %s; sender told to retry", inbound.channel, inbound.platform_id)
        return error(NOT_ACCEPTED, frame_id, retry=True), None
    return {"type": "ack", "id": frame_id}, receipt

"""Reading a webhook POST body within the network's own size limit, before any signature check.

A body is refused on its Content-Length before a byte of it is read, and a chunked body as
soon as it passes the limit; the connection is then closed, so an unsigned 20 MB post costs
the relay one read buffer, not 20 MB.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
REFUSED_GRACE = 2.0
"""Seconds a refused sender has to read the 413 before its connection is closed."""

WHATSAPP_MAX_BODY = 3 * 1024 * 1024
"""Meta: WhatsApp Cloud API webhook payloads are at most 3 MB (files travel as media ids)."""
WECHAT_MAX_BODY = 256 * 1024
"""WeChat pushes one message's XML (text up to 2048 bytes; media as MediaId), ~1.4x in safe mode."""
TELEGRAM_MAX_BODY = 1024 * 1024
"""Telegram updates carry text up to 4096 characters and file ids, never file bytes."""


class BodyTooLarge(Exception):
    """The body is over its limit; `response` is the 413 to answer through `Refusals.answer`."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.text)
        self.response = response


class Refusals:
    """The connections of refused bodies, each closed after a short grace or when the channel stops."""

    def __init__(self) -> None:
        self._open: set[asyncio.BaseTransport] = set()

    async def answer(self, request: web.Request, refusal: BodyTooLarge) -> web.StreamResponse:
        """Answer 413 now and read no more of the body; the connection closes after a short grace.

        Closing at once would reset a sender still writing, which could then miss the 413.
        """
        response = refusal.response
        await response.prepare(request)
        await response.write_eof()
        transport = request.transport
        if transport is not None and not transport.is_closing():
            transport.pause_reading()
            self._open.add(transport)
            asyncio.get_running_loop().call_later(REFUSED_GRACE, self._close, transport)
        return response

    def _close(self, transport: asyncio.BaseTransport) -> None:
        self._open.discard(transport)
        transport.close()

    def drop(self) -> None:
        """Close at once every refused connection still in its grace (on stop)."""
        for transport in list(self._open):
            self._close(transport)


def too_large(network: str, limit: int, content_type: str = "text/plain") -> web.Response:
    """The 413 answer: what was refused and the limit, as text or as the network's JSON shape."""
    message = (f"webhook body too large: {network} webhooks are at most {limit} bytes; "
               "refused unread (not journaled)")
    if content_type == "application/json":
        response = web.json_response({"ok": False, "error": message}, status=413)
    else:
        response = web.Response(status=413, text=message)
    response.force_close()
    return response


async def read_body(request: web.Request, network: str, limit: int, content_type: str = "text/plain") -> bytes:
    """The whole body when it is at most `limit` bytes; raises BodyTooLarge without buffering more."""
    declared = request.content_length
    if declared is not None and declared > limit:
        log.warning("%s webhook refused: Content-Length %d over the %d-byte limit", network, declared, limit)
        raise BodyTooLarge(too_large(network, limit, content_type))
    parts: list[bytes] = []
    size = 0
    while chunk := await request.content.read(CHUNK):
        size += len(chunk)
        if size > limit:
            log.warning("%s webhook refused: body over the %d-byte limit", network, limit)
            raise BodyTooLarge(too_large(network, limit, content_type))
        parts.append(chunk)
    return b"".join(parts)

"""Open WebSockets per recipient (visitor or employee), so `send` can reach every open tab."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict

from aiohttp import WSCloseCode, web

from bots.webchat.frames import Frame, encode

log = logging.getLogger("relay.webchat.sockets")

MAX_CLOSE_REASON = 123
"""RFC 6455: a close frame's reason is at most 123 bytes."""


class Sockets:
    """recipient key → the set of its open sockets."""

    def __init__(self) -> None:
        self._open: defaultdict[str, set[web.WebSocketResponse]] = defaultdict(set)

    def add(self, key: str, ws: web.WebSocketResponse) -> None:
        self._open[key].add(ws)

    def remove(self, key: str, ws: web.WebSocketResponse) -> None:
        group = self._open.get(key)
        if group is not None:
            group.discard(ws)
            if not group:
                del self._open[key]

    def count(self, key: str) -> int:
        return len(self._open.get(key, ()))

    async def push(self, key: str, frame: Frame) -> int:
        """Send `frame` to each open socket of `key`; returns on how many it was written."""
        data = encode(frame)
        written = 0
        for ws in list(self._open.get(key, ())):
            if ws.closed:
                self.remove(key, ws)
                continue
            try:
                await ws.send_str(data)
                written += 1
            except (ConnectionError, RuntimeError) as exc:
                log.info("push to %s failed on one socket: %s", key, exc)
                self.remove(key, ws)
        return written

    async def close(self, key: str | None = None, message: str = "server shutting down",
                    code: int = WSCloseCode.GOING_AWAY) -> int:
        """Close the sockets of `key` (all when None) with `code` and `message`; returns how many.

        They are closed together, so one peer slow to answer the close does not hold up the rest.
        """
        keys = [key] if key is not None else list(self._open)
        sockets = [ws for k in keys for ws in self._open.pop(k, ())]
        reason = message.encode()[:MAX_CLOSE_REASON]
        await asyncio.gather(*(ws.close(code=code, message=reason) for ws in sockets), return_exceptions=True)
        return len(sockets)

"""Open WebSockets per recipient (visitor or employee), so `send` can reach every open tab."""

from __future__ import annotations

import logging
from collections import defaultdict

from aiohttp import WSCloseCode, web

from bots.webchat.frames import Frame, encode

log = logging.getLogger("relay.webchat.sockets")


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

    async def close(self, key: str | None = None, message: str = "server shutting down") -> None:
        keys = [key] if key is not None else list(self._open)
        for k in keys:
            for ws in list(self._open.get(k, ())):
                await ws.close(code=WSCloseCode.GOING_AWAY, message=message.encode())
            self._open.pop(k, None)

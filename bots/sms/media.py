"""Files for outgoing MMS: Twilio fetches each from a URL, so the relay serves it for a while.

Each file gets an unguessable URL under the channel's webhook path, kept in memory for
`TTL` seconds (and at most `MAX_BYTES` in all, oldest dropped first). Twilio fetches the media
within seconds of the request; a URL lost to a restart makes Twilio fail the message, and that
failure comes back as a status callback and is journaled.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict

from aiohttp import web

TTL = 4 * 3600.0
MAX_BYTES = 100 << 20
MMS_MAX_BYTES = 5 << 20
"""Twilio accepts at most 5 MB of media per MMS (and 10 files)."""
MMS_MAX_FILES = 10


class MediaShelf:
    def __init__(self) -> None:
        self._files: OrderedDict[str, tuple[float, str, bytes]] = OrderedDict()
        self._bytes = 0

    def put(self, data: bytes, mime: str) -> str:
        """A token for `data`; the file is served at `<path>/media/<token>`."""
        self._expire()
        token = secrets.token_urlsafe(24)
        self._files[token] = (time.monotonic() + TTL, mime, data)
        self._bytes += len(data)
        while self._bytes > MAX_BYTES and len(self._files) > 1:
            _, (_, _, old) = self._files.popitem(last=False)
            self._bytes -= len(old)
        return token

    def _expire(self) -> None:
        now = time.monotonic()
        while self._files:
            token, (until, _, data) = next(iter(self._files.items()))
            if until > now:
                break
            self._files.popitem(last=False)
            self._bytes -= len(data)

    async def handle(self, request: web.Request) -> web.Response:
        self._expire()
        entry = self._files.get(request.match_info.get("token", ""))
        if entry is None:
            return web.Response(status=404, text="no such media (expired or unknown)")
        _, mime, data = entry
        return web.Response(body=data, content_type=mime)

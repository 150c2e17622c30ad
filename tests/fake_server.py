"""What the fake network servers share: an aiohttp app on a free loopback port, a client
session for playing the network's side (posting webhooks), and a queue of injected faults."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from typing import Any, ClassVar

import aiohttp
from aiohttp import web


@dataclass
class FakeServer:
    """Subclasses add their routes in `routes`; `await start()` returns the base URL."""

    MAX_BODY: ClassVar[int] = 50 << 20

    url: str = ""
    faults: list[Any] = field(default_factory=list)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))
    _runner: web.AppRunner | None = None
    _session: aiohttp.ClientSession | None = None

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    async def start(self) -> str:
        app = web.Application(client_max_size=self.MAX_BODY)
        self.routes(app)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        self._session = aiohttp.ClientSession()
        return self.url

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _next_fault(self) -> Any:
        """The next injected fault (after its delay), or None when none is queued."""
        if not self.faults:
            return None
        fault = self.faults.pop(0)
        if fault.delay:
            await asyncio.sleep(fault.delay)
        return fault

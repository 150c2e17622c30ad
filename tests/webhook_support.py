"""Test helpers for the webhook channels: a hub stand-in that records and dedupes like the
real one, an in-memory StateStore, and a real aiohttp host on 127.0.0.1 port 0."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from bots.base import ChannelContext
from relay.model import Inbound, Receipt, conversation_id
from tests.channel_support import MemoryState  # noqa: F401  (re-exported for the tests)


@dataclass
class Recorder:
    """`deliver` as the hub does it: journal (here: a list), dedupe by (channel, platform_id).

    `fail_next` makes the next N calls raise, as a journal that cannot commit would.
    """

    journal: list[Inbound] = field(default_factory=list)
    calls: int = 0
    fail_next: int = 0
    delay: float = 0.0
    _ids: dict[tuple[str, str], str] = field(default_factory=dict)

    async def __call__(self, inbound: Inbound) -> Receipt:
        self.calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail_next > 0:
            self.fail_next -= 1
            raise OSError("journal unavailable")
        key = (inbound.channel, inbound.platform_id)
        conv = conversation_id(inbound.channel, inbound.chat)
        if key in self._ids:
            return Receipt(self._ids[key], conv, duplicate=True)
        message_id = f"m-{len(self.journal) + 1}"
        self._ids[key] = message_id
        self.journal.append(inbound)
        return Receipt(message_id, conv)

    def by_id(self, platform_id: str) -> Inbound:
        matches = [i for i in self.journal if i.platform_id == platform_id]
        assert len(matches) == 1, (platform_id, [i.platform_id for i in self.journal])
        return matches[0]


class Host:
    """The shared aiohttp Application, really listening on loopback."""

    def __init__(self, max_attachment_bytes: int = 1 << 20) -> None:
        self.app = web.Application()
        self.state = MemoryState()
        self.max_attachment_bytes = max_attachment_bytes
        self._runner: web.AppRunner | None = None
        self.url = ""

    def ctx(self, name: str, side: str = "client", **extra: Any) -> ChannelContext:
        return ChannelContext(
            name=name,
            side=side,
            state=self.state,
            app=self.app,
            data_dir="/nonexistent",
            max_attachment_bytes=self.max_attachment_bytes,
            wake=lambda address: None,
            extra=extra,
        )

    async def start(self) -> str:
        self._runner = web.AppRunner(self.app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

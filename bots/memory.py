"""An in-process channel: messages are injected by code and sent ones are kept in order.

For benchmarks and for embedding relay in another asyncio program; it speaks no network,
so the rest of the pipeline (journal, policy, outbox) is what is measured or exercised.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Mapping

from bots.base import ChannelContext, Deliver, Permanent, Retryable
from relay.model import Inbound, Outgoing, Party, Receipt


class MemoryChannel:
    """Keeps every sent Outgoing in `sent`; `online=False` makes sends Retryable."""

    def __init__(self, name: str, ctx: ChannelContext) -> None:
        self.name = name
        self.ctx = ctx
        self.sent: list[Outgoing] = []
        self.sent_at: list[float] = []
        self.online = True
        self.permanent_error: str | None = None
        self.retry_after: float | None = None
        self._deliver: Deliver | None = None
        self._counter = 0
        self.arrived = asyncio.Event()

    async def start(self, deliver: Deliver) -> None:
        self._deliver = deliver

    async def stop(self) -> None:
        self._deliver = None

    async def send(self, out: Outgoing) -> str:
        if self.permanent_error is not None:
            raise Permanent(self.permanent_error)
        if not self.online:
            raise Retryable("memory channel offline", after=self.retry_after)
        self._counter += 1
        self.sent.append(out)
        self.sent_at.append(time.perf_counter())
        self.arrived.set()
        return f"{self.name}-{self._counter}"

    async def inject(self, user: str, text: str, platform_id: str, chat: str | None = None,
                     display: str = "", **fields: Any) -> Receipt:
        """Hand an inbound to the hub as if the network had delivered it."""
        if self._deliver is None:
            raise RuntimeError(f"channel {self.name} is not started")
        inbound = Inbound(channel=self.name, platform_id=platform_id, sender=Party(self.name, user, display or user),
                          chat=chat if chat is not None else user, text=text, raw=text.encode(), **fields)
        return await self._deliver(inbound)


def create(name: str, settings: Mapping[str, Any], ctx: ChannelContext) -> MemoryChannel:
    return MemoryChannel(name, ctx)

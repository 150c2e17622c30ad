"""An in-process channel: messages are injected by code and sent ones are kept in order.

For benchmarks and for embedding relay in another asyncio program; it speaks no network,
so the rest of the pipeline (journal, policy, outbox) is what is measured or exercised.
Settings (all optional): `latency`, seconds between writing a message and its confirmation
(a network round trip), and `send_window`, how many messages of one conversation the outbox
may have in flight (relay.outbox), kept in order by `bots.send_order`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Mapping

from bots.base import ChannelConfigError, ChannelContext, Deliver, Permanent, Retryable, unknown_settings
from bots.send_order import SendOrder, window_setting
from relay.model import Inbound, Outgoing, Party, Receipt


class MemoryChannel:
    """Keeps every sent Outgoing in `sent`; `online=False` makes sends Retryable."""

    def __init__(self, name: str, ctx: ChannelContext, latency: float = 0.0, send_window: int = 1) -> None:
        self.name = name
        self.ctx = ctx
        self.latency = latency
        self.send_window = send_window
        self.in_flight = 0
        self.max_in_flight = 0
        self._order = SendOrder()
        self.sent: list[Outgoing] = []
        self.sent_at: list[float] = []
        self.online = True
        self.exclusive = False
        self.permanent_error: str | None = None
        self.fail_once: set[str] = set()
        """Texts whose next send fails with Retryable (then succeeds): a one-off network error."""
        self.retry_after: float | None = None
        self._deliver: Deliver | None = None
        self._counter = 0
        self.arrived = asyncio.Event()

    async def start(self, deliver: Deliver) -> None:
        self._deliver = deliver

    async def stop(self) -> None:
        self._deliver = None

    async def send(self, out: Outgoing) -> str:
        async with self._order.turn((out.to.user, out.conversation)) as turn:
            if self.permanent_error is not None:
                raise Permanent(self.permanent_error)
            if not self.online:
                raise Retryable("memory channel offline", after=self.retry_after)
            if out.text in self.fail_once:
                self.fail_once.discard(out.text)
                raise Retryable("memory channel: one-off failure")
            self._counter += 1
            platform_id = f"{self.name}-{self._counter}"
            self.sent.append(out)
            self.sent_at.append(time.perf_counter())
            self.arrived.set()
            turn.release()
            if self.latency:
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
                try:
                    await asyncio.sleep(self.latency)
                finally:
                    self.in_flight -= 1
            return platform_id

    async def inject(self, user: str, text: str, platform_id: str, chat: str | None = None,
                     display: str = "", **fields: Any) -> Receipt:
        """Hand an inbound to the hub as if the network had delivered it."""
        if self._deliver is None:
            raise RuntimeError(f"channel {self.name} is not started")
        inbound = Inbound(channel=self.name, platform_id=platform_id, sender=Party(self.name, user, display or user),
                          chat=chat if chat is not None else user, text=text, raw=text.encode(), **fields)
        return await self._deliver(inbound)


SETTINGS = ("latency", "send_window", "exclusive")


def create(name: str, settings: Mapping[str, Any], ctx: ChannelContext) -> MemoryChannel:
    if set(settings) - set(SETTINGS):
        raise unknown_settings(name, "memory", set(settings) - set(SETTINGS), SETTINGS)
    latency = settings.get("latency", 0.0)
    if isinstance(latency, bool) or not isinstance(latency, (int, float)) or latency < 0:
        raise ChannelConfigError(f"channel {name}: latency must be a number of seconds >= 0, got {latency!r}")
    channel = MemoryChannel(name, ctx, float(latency), window_setting(name, settings, 1))
    # like a connection-held network: on a shared journal it runs on the relay holding its lease
    channel.exclusive = bool(settings.get("exclusive", False))
    return channel

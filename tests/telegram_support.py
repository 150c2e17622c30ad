"""Test helpers for the Telegram channel: an in-memory StateStore, a recording `deliver`,
and a ChannelContext wired to a fresh aiohttp app, so the real adapter runs against the fake.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable

from aiohttp import web

from bots.base import ChannelContext, EmployeeInfo
from relay.model import Inbound, Receipt, conversation_id
from tests.channel_support import MemoryState  # noqa: F401  (re-exported for the tests)

CLIENT_TOKEN = "111111:client-token"
STAFF_TOKEN = "222222:staff-token"
STAFF_GROUP = -1001234567890


class Recorder:
    """A `deliver` that records Inbounds, deduplicates by platform id like the hub, and can
    be told to fail, to check that nothing is acknowledged before it returns."""

    def __init__(self) -> None:
        self.inbounds: list[Inbound] = []
        self.seen: set[str] = set()
        self.calls = 0
        self.fail_next = 0
        self.event = asyncio.Event()

    async def __call__(self, inbound: Inbound) -> Receipt:
        self.calls += 1
        if self.fail_next > 0:
            self.fail_next -= 1
            raise RuntimeError("journal unavailable (test)")
        conv = conversation_id(inbound.channel, inbound.chat)
        if inbound.platform_id in self.seen:
            return Receipt(f"m-{inbound.platform_id}", conv, duplicate=True)
        self.seen.add(inbound.platform_id)
        self.inbounds.append(inbound)
        self.event.set()
        return Receipt(f"m-{inbound.platform_id}", conv)

    async def wait_for(self, count: int, timeout: float = 5.0) -> list[Inbound]:
        deadline = time.monotonic() + timeout
        while len(self.inbounds) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"expected {count} inbounds, got {len(self.inbounds)}: {self.inbounds}")
            self.event.clear()
            try:
                await asyncio.wait_for(self.event.wait(), remaining)
            except asyncio.TimeoutError:
                pass
        return self.inbounds


def make_ctx(
    name: str,
    side: str,
    state: MemoryState | None = None,
    app: web.Application | None = None,
    max_bytes: int = 1_000_000,
    employees: dict[str, EmployeeInfo] | None = None,
    public_url: str = "",
) -> ChannelContext:
    return ChannelContext(
        name=name,
        side=side,
        state=state or MemoryState(),
        app=app or web.Application(),
        data_dir="/nonexistent",
        max_attachment_bytes=max_bytes,
        wake=lambda address: None,
        employees=employees or {},
        public_url=public_url,
    )


async def eventually(check: Callable[[], Any], timeout: float = 5.0, interval: float = 0.02) -> Any:
    """Wait until `check()` is truthy; return its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)

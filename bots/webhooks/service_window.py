"""The customer-service window of a business messaging network (WhatsApp 24 h, WeChat 48 h).

A business may answer freely only for a while after the client last wrote; the last time is
kept in the channel's durable state so a restart does not forget who may be answered.
"""

from __future__ import annotations

import time
from typing import Callable

from bots.base import StateStore


class ServiceWindow:
    """Tracks, per client chat, the time of the client's last interaction."""

    def __init__(self, state: StateStore, hours: float, clock: Callable[[], float] = time.time) -> None:
        self._state = state
        self._seconds = hours * 3600.0
        self._clock = clock
        self._cache: dict[str, float] = {}

    @staticmethod
    def _key(chat: str) -> str:
        return f"window:{chat}"

    async def last(self, chat: str) -> float | None:
        """When the client last wrote (network time, seconds since the epoch), if ever."""
        if chat in self._cache:
            return self._cache[chat]
        raw = await self._state.get(self._key(chat))
        if raw is None:
            return None
        try:
            value = float(raw)
        except ValueError:
            return None
        self._cache[chat] = value
        return value

    async def touch(self, chat: str, at: float) -> None:
        """Record an interaction at `at` (clamped to now); older times never move it back."""
        at = min(at, self._clock())
        previous = await self.last(chat)
        if previous is not None and previous >= at:
            return
        await self._state.put(self._key(chat), repr(at))
        self._cache[chat] = at

    async def is_open(self, chat: str) -> bool:
        last = await self.last(chat)
        return last is not None and self._clock() - last < self._seconds

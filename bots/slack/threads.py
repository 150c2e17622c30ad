"""conversation ↔ thread in the staff channel, kept in the channel's durable state both ways,
so a restart neither opens a second thread for a conversation nor forgets what a thread answers."""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable

from bots.base import StateStore


class ThreadMap:
    """The thread (`thread_ts` of its root message) of each relay conversation."""

    def __init__(self, state: StateStore) -> None:
        self._state = state
        self._thread_of: dict[str, str] = {}
        self._conv_of: dict[str, str] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def conversation_of(self, thread_ts: str) -> str | None:
        if thread_ts in self._conv_of:
            return self._conv_of[thread_ts]
        conv = await self._state.get(f"conv:{thread_ts}")
        if conv:
            self._conv_of[thread_ts] = conv
        return conv

    async def known(self, conversation: str) -> str | None:
        if conversation in self._thread_of:
            return self._thread_of[conversation]
        ts = await self._state.get(f"thread:{conversation}")
        if ts:
            self._thread_of[conversation] = ts
        return ts

    async def thread_for(self, conversation: str, open_thread: Callable[[], Awaitable[str]]) -> str:
        """The conversation's thread, opened with `open_thread()` (returns the root's ts) once."""
        ts = await self.known(conversation)
        if ts:
            return ts
        async with self._locks.setdefault(conversation, asyncio.Lock()):
            ts = await self.known(conversation)
            if ts:
                return ts
            ts = await open_thread()
            await self._state.put(f"conv:{ts}", conversation)
            await self._state.put(f"thread:{conversation}", ts)
            self._thread_of[conversation] = ts
            self._conv_of[ts] = conversation
            return ts

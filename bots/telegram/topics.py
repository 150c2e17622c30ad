"""Staff side of the Telegram channel: one forum topic per relay conversation.

The map lives in the channel's durable state in both directions, so a restart neither opens a
second topic for a conversation nor loses which conversation a topic answers.
"""

from __future__ import annotations

import asyncio

from telegram import Bot

from bots.base import StateStore
from relay.model import Outgoing

TOPIC_NAME_MAX = 128


class TopicMap:
    """conversation id ↔ message_thread_id in the staff supergroup."""

    def __init__(self, bot: Bot, state: StateStore, staff_group: int) -> None:
        self.bot = bot
        self.state = state
        self.staff_group = staff_group
        self._thread_of: dict[str, int] = {}
        self._conv_of: dict[int, str] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def conversation_of(self, thread: int) -> str | None:
        if thread in self._conv_of:
            return self._conv_of[thread]
        conv = await self.state.get(f"thread:{thread}")
        if conv:
            self._conv_of[thread] = conv
            self._thread_of[conv] = thread
        return conv

    async def thread_for(self, out: Outgoing) -> int | None:
        """The forum topic of a conversation, created on first use (None: the general topic)."""
        conv = out.conversation
        if not conv:
            return None
        if conv in self._thread_of:
            return self._thread_of[conv]
        async with self._locks.setdefault(conv, asyncio.Lock()):
            if conv in self._thread_of:
                return self._thread_of[conv]
            stored = await self.state.get(f"topic:{conv}")
            if stored:
                thread = int(stored)
            else:
                if out.client is None:
                    return None
                client = out.client
                title = f"{client.display or client.user} ({client.channel})"[:TOPIC_NAME_MAX]
                topic = await self.bot.create_forum_topic(self.staff_group, title)
                thread = topic.message_thread_id
                await self.state.put(f"thread:{thread}", conv)
                await self.state.put(f"topic:{conv}", str(thread))
            self._thread_of[conv] = thread
            self._conv_of[thread] = conv
            return thread

"""Staff side of the Telegram channel: one forum topic per relay conversation.

The map lives in the channel's durable state in both directions, so a restart neither opens a
second topic for a conversation nor loses which conversation a topic answers.
"""

from __future__ import annotations

import asyncio

from telegram import Bot
from telegram.error import BadRequest

from bots.base import StateStore
from relay.model import Outgoing

TOPIC_NAME_MAX = 128
UNKNOWN_TOPIC = "telegram-topic:"
"""Prefix of the chat of a message written in a topic that is no conversation's: the hub finds no
such conversation, refuses the message and answers there (`thread_for` maps it back)."""


def unknown_topic(thread: int) -> str:
    return f"{UNKNOWN_TOPIC}{thread}"


def topic_lost(exc: BadRequest) -> bool:
    """Telegram's answer to a send into a forum topic that was deleted."""
    text = exc.message.lower()
    return "thread not found" in text or "topic_deleted" in text


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
        if not conv:
            return None
        self._conv_of[thread] = conv
        self._thread_of[conv] = thread
        return conv

    async def thread_for(self, out: Outgoing) -> int | None:
        """The forum topic of a conversation, created on first use (None: the general topic)."""
        conv = out.conversation
        if not conv:
            return None
        if conv.startswith(UNKNOWN_TOPIC) and conv[len(UNKNOWN_TOPIC):].isdigit():
            return int(conv[len(UNKNOWN_TOPIC):])
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
                return await self._open(out)
            self._thread_of[conv] = thread
            self._conv_of[thread] = conv
            return thread

    async def reopen(self, out: Outgoing, lost: int) -> int:
        """The conversation's topic `lost` is gone (deleted in Telegram): open a new one and map
        the conversation to it; a concurrent send that already reopened it wins."""
        conv = out.conversation
        async with self._locks.setdefault(conv, asyncio.Lock()):
            current = self._thread_of.get(conv)
            if current is not None and current != lost:
                return current
            self._thread_of.pop(conv, None)
            self._conv_of.pop(lost, None)
            await self.state.put(f"thread:{lost}", "")
            return await self._open(out)

    async def _open(self, out: Outgoing) -> int:
        client = out.client
        name = f"{client.display or client.user} ({client.channel})" if client is not None else out.conversation
        topic = await self.bot.create_forum_topic(self.staff_group, name[:TOPIC_NAME_MAX])
        thread = topic.message_thread_id
        await self.state.put(f"thread:{thread}", out.conversation)
        await self.state.put(f"topic:{out.conversation}", str(thread))
        self._thread_of[out.conversation] = thread
        self._conv_of[thread] = out.conversation
        return thread

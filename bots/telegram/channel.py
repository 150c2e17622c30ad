"""Telegram channel: python-telegram-bot's `Bot` on either side of a desk.

Client side: private chats with the bot. Staff side: a forum supergroup with one topic per
conversation (bots/telegram/topics.py); sending is bots/telegram/sender.py. Updates are
acknowledged to Telegram (the getUpdates offset, bots/telegram/polling.py, or the webhook's
HTTP answer, bots/telegram/webhook.py) only after `deliver` returned, i.e. after the hub
journaled them; that is why PTB's Application/Updater, which acknowledges by itself, is not used.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Mapping

from telegram import Bot
from telegram.error import TelegramError
from telegram.request import HTTPXRequest

from bots.base import ChannelContext, Deliver
from bots.telegram.polling import Poller
from bots.telegram.sender import TelegramSender, delivery_error
from bots.telegram.settings import TelegramSettings, parse_settings
from bots.telegram.topics import TopicMap
from bots.telegram.updates import Unit, UpdateReader
from bots.telegram.webhook import WebhookIntake
from relay.model import Outgoing

log = logging.getLogger("relay.telegram")


class TelegramChannel:
    """One configured Telegram bot; see the module docstring."""

    def __init__(self, name: str, cfg: TelegramSettings, ctx: ChannelContext) -> None:
        self.name = name
        self.cfg = cfg
        self.ctx = ctx
        self.exclusive = cfg.mode == "polling"
        """One getUpdates poller per bot token: on a shared journal only the lease holder polls."""
        timeout = cfg.request_timeout
        self.bot = Bot(
            cfg.token,
            base_url=cfg.base_url,
            base_file_url=cfg.base_file_url,
            request=HTTPXRequest(
                connection_pool_size=cfg.max_concurrent_sends,
                read_timeout=timeout,
                write_timeout=timeout,
                connect_timeout=timeout,
                pool_timeout=timeout,
                media_write_timeout=max(timeout, 20.0),
            ),
            get_updates_request=HTTPXRequest(
                connection_pool_size=2,
                read_timeout=timeout,
                write_timeout=timeout,
                connect_timeout=timeout,
                pool_timeout=timeout,
            ),
        )
        self.topics = TopicMap(self.bot, ctx.state, cfg.staff_group) if cfg.staff_group is not None else None
        self.sender = TelegramSender(self.bot, ctx.state, cfg.side, self.topics, cfg.max_concurrent_sends,
                                     ctx.reopened)
        self.reader = UpdateReader(name, cfg, ctx, self.bot, self.topics)
        self._deliver: Deliver | None = None
        self._initialized = False
        self._init_lock = asyncio.Lock()
        self.intake: Poller | WebhookIntake = (
            Poller(name, cfg, self.bot, ctx.state, self._ensure_init, self._deliver_unit)
            if cfg.mode == "polling"
            else WebhookIntake(name, cfg, ctx, self.bot, self._ensure_init, self._deliver_unit)
        )

    # ----- lifecycle -----

    async def start(self, deliver: Deliver) -> None:
        self._deliver = deliver
        self.intake.start()

    async def stop(self) -> None:
        await self.intake.stop()
        try:
            await self.bot.shutdown()
        except Exception as exc:
            log.debug("%s: shutdown: %r", self.name, exc)
        self._initialized = False

    async def _ensure_init(self) -> None:
        if self._initialized:
            return
        async with self._init_lock:
            if not self._initialized:
                await self.bot.initialize()
                self._initialized = True

    # ----- receiving -----

    async def _deliver_unit(self, unit: Unit) -> None:
        """Hand a unit to the hub (returns once journaled), then note an album's parts."""
        assert self._deliver is not None
        inbound = await self.reader.read(unit)
        await self._deliver(inbound)
        await self.reader.remember(unit)

    # ----- sending -----

    async def send(self, out: Outgoing) -> str:
        try:
            await self._ensure_init()
        except TelegramError as exc:
            raise delivery_error(exc, out.kind) from exc
        return await self.sender.send(out)


def create(name: str, settings: Mapping[str, Any], ctx: ChannelContext) -> TelegramChannel:
    """Build the channel from its config block (see config.example.yaml)."""
    return TelegramChannel(name, parse_settings(name, settings, ctx), ctx)

"""Telegram for either side of a desk, on python-telegram-bot's `Bot` (`network: telegram`).

What lives where: `channel` (the channel the hub drives, `create`), `settings` (the config
block), `polling` and `webhook` (the two ways updates come in, each acknowledging only what
was journaled), `updates` (an update, or an album's updates, into one Inbound), `format`
(pure Bot API JSON helpers), `sender` (sending within Telegram's limits), `topics` (one
forum topic per conversation on the staff side), `backoff` (retry pacing).
"""

from __future__ import annotations

from bots.telegram.channel import TelegramChannel, create
from bots.telegram.settings import TelegramSettings, parse_settings

__all__ = ["TelegramChannel", "TelegramSettings", "create", "parse_settings"]

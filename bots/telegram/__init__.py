"""Telegram for either side of a desk, on python-telegram-bot's `Bot` (`network: telegram`)."""

from __future__ import annotations

from bots.telegram.channel import TelegramChannel, TelegramSettings, create, parse_settings

__all__ = ["TelegramChannel", "TelegramSettings", "create", "parse_settings"]

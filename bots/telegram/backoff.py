"""Retry pacing for the Telegram channel's setup calls and its polling loop: a failing Bot API
is retried with capped, jittered delays instead of hammered or given up on."""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any, Awaitable, Callable

from telegram.error import RetryAfter, TelegramError

from bots.telegram.sender import retry_seconds

log = logging.getLogger("relay.telegram")


class Backoff:
    """Capped exponential backoff with jitter, reset after a success."""

    def __init__(self, base: float, cap: float) -> None:
        self.base = base
        self.cap = cap
        self.failures = 0

    def delay(self) -> float:
        step = min(self.cap, self.base * (2 ** min(self.failures, 16)))
        self.failures += 1
        return step * random.uniform(0.5, 1.0)

    def reset(self) -> None:
        self.failures = 0


async def retrying(name: str, what: str, step: Callable[[], Awaitable[Any]], cap: float) -> Any:
    """Run a setup call until it succeeds, backing off on every failure."""
    backoff = Backoff(0.5, cap)
    while True:
        try:
            return await step()
        except RetryAfter as exc:
            await asyncio.sleep(retry_seconds(exc))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            delay = backoff.delay()
            why = exc.message if isinstance(exc, TelegramError) else type(exc).__name__
            log.warning("%s: %s failed (%s); retrying in %.1f s", name, what, why, delay)
            await asyncio.sleep(delay)

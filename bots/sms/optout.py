"""Carrier keywords: STOP ends messaging to a number until it texts START; HELP is answered.

The opt-out is kept in the channel's durable state (written before the keyword message is
journaled and acknowledged), so a restart never messages a number that said STOP.
"""

from __future__ import annotations

import time

from bots.base import StateStore

STOP_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT", "REVOKE"})
START_WORDS = frozenset({"START", "YES", "UNSTOP"})
HELP_WORDS = frozenset({"HELP", "INFO"})


def keyword(body: str) -> str:
    """`stop`, `start`, `help` or '' for a message body (the whole body, one word, any case)."""
    word = body.strip().upper()
    if word in STOP_WORDS:
        return "stop"
    if word in START_WORDS:
        return "start"
    if word in HELP_WORDS:
        return "help"
    return ""


class OptOuts:
    """Which numbers said STOP (and not START since), per channel."""

    def __init__(self, state: StateStore) -> None:
        self._state = state

    @staticmethod
    def _key(number: str) -> str:
        return f"optout:{number}"

    async def record(self, number: str, word: str, at: float | None = None) -> None:
        """Remember a STOP (`stop`) or START (`start`) from `number`."""
        if word not in ("stop", "start"):
            return
        await self._state.put(self._key(number), f"{word}:{at if at is not None else time.time():.0f}")

    async def opted_out(self, number: str) -> str:
        """'' when `number` may be messaged, else why not (to tell the employee)."""
        value = await self._state.get(self._key(number))
        if not value or not value.startswith("stop:"):
            return ""
        return f"{number} opted out (texted STOP); it is not messaged until it texts START"

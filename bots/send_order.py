"""Write order for channels that let the outbox send several messages of a lane at once.

A channel with `send_window` > 1 (see relay.outbox) is called for up to that many messages of
one conversation before the first is confirmed; the outbox starts the calls in order. The
channel must (1) put them on the network in call order and (2) once one fails with
`Retryable`, make the ones already waiting fail too instead of overtaking it, because the
outbox will send the failed one again first. `SendOrder` does both:

    async with self.order.turn((recipient, conversation)) as turn:
        ...write the message...
        turn.release()          # the next message of the lane may be written now
        ...await the network's confirmation...

The outbox marks each window it sends with a `Window` (in the context variable `WINDOW`,
which the send tasks inherit). A `Retryable` raised inside the block (while writing or while
waiting for confirmation) marks the lane failed in that window: the window's later sends in
that lane raise `Retryable` when they get their turn instead of writing. The outbox's retry
is a new window, so it proceeds. Without a window (one send at a time) nothing is fenced.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from typing import Any, AsyncIterator, Hashable, Mapping

from bots.base import ChannelConfigError, Retryable

MAX_WINDOW = 256


def window_setting(name: str, settings: Mapping[str, Any], default: int) -> int:
    """A channel's `send_window` setting: a whole number from 1 to `MAX_WINDOW`."""
    window = settings.get("send_window", default)
    if isinstance(window, bool) or not isinstance(window, int) or not 1 <= window <= MAX_WINDOW:
        raise ChannelConfigError(
            f"channel {name}: send_window must be a whole number from 1 to {MAX_WINDOW}, got {window!r}")
    return window


class Window:
    """One batch of sends the outbox started together; remembers the lanes that failed in it."""

    __slots__ = ("failed",)

    def __init__(self) -> None:
        self.failed: set[Hashable] = set()


WINDOW: contextvars.ContextVar[Window | None] = contextvars.ContextVar("relay_send_window", default=None)


class _Lane:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class Turn:
    """One send's place in its lane's write order."""

    __slots__ = ("_lock", "_held")

    def __init__(self, lock: asyncio.Lock) -> None:
        self._lock = lock
        self._held = False

    def release(self) -> None:
        """Written: the lane's next send may write now (idempotent)."""
        if self._held:
            self._held = False
            self._lock.release()


class SendOrder:
    """Per-lane write order and failure fencing (see the module docstring)."""

    def __init__(self) -> None:
        self._lanes: dict[Hashable, _Lane] = {}

    @contextlib.asynccontextmanager
    async def turn(self, key: Hashable) -> AsyncIterator[Turn]:
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane()
        lane.users += 1
        window = WINDOW.get()
        turn = Turn(lane.lock)
        try:
            await lane.lock.acquire()
            turn._held = True
            if window is not None and key in window.failed:
                raise Retryable("an earlier message of this conversation is being sent again first")
            try:
                yield turn
            except Retryable:
                if window is not None:
                    window.failed.add(key)
                raise
        finally:
            turn.release()
            lane.users -= 1
            if not lane.users:
                self._lanes.pop(key, None)

    def __len__(self) -> int:
        """Lanes with a send in progress (their state is dropped when the last one ends)."""
        return len(self._lanes)

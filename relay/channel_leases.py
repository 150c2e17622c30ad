"""Connection-held channels on a journal several relays share: a channel whose adapter says
`exclusive = True` (one Telegram poller per bot, one XMPP session per account) runs on one
relay at a time, the one holding its lease in the database; when that relay dies, another
takes the lease once it runs out and starts the channel.

A relay that cannot renew (the database away) stops its channel before the lease can have run
out, so two relays never run one exclusive channel at once as long as clocks tick alike.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

log = logging.getLogger("relay.leases")

Toggle = Callable[[str], Awaitable[None]]


def is_exclusive(channel: Any) -> bool:
    return bool(getattr(channel, "exclusive", False))


class ChannelLeases:
    """`run()` until cancelled: every third of the lease, take or renew each channel's lease,
    start the channels won and stop those lost (or not renewed within 80% of the lease)."""

    def __init__(self, journal: Any, names: list[str], start: Toggle, stop: Toggle) -> None:
        self.journal = journal
        self.names = names
        self._start = start
        self._stop = stop
        self.lease = float(journal.lease_seconds)
        self.running: set[str] = set()
        self._renewed: dict[str, float] = {}

    async def step(self) -> None:
        for name in self.names:
            try:
                held = await asyncio.wait_for(self.journal.hold_lease(f"channel:{name}"), self.lease * 0.5)
            except Exception as exc:  # the database away: keep running only while the lease surely holds
                log.warning("lease for channel %s not renewed: %r", name, exc)
                held = name in self.running and time.monotonic() - self._renewed.get(name, 0.0) < self.lease * 0.8
                if not held and name in self.running:
                    log.warning("channel %s stopped: its lease may have run out", name)
            else:
                if held:
                    self._renewed[name] = time.monotonic()
            if held and name not in self.running:
                log.info("lease taken: channel %s starts on this relay", name)
                await self._start(name)
                self.running.add(name)
            elif not held and name in self.running:
                self.running.discard(name)
                await self._stop(name)

    async def run(self) -> None:
        while True:
            await self.step()
            await asyncio.sleep(self.lease / 3)


def exclusive_names(channels: Mapping[str, Any]) -> list[str]:
    return [name for name, ch in channels.items() if is_exclusive(ch)]

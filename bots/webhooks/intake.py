"""What the webhook adapters share: journal-before-ack bookkeeping and the raw-body event.

A network retries a webhook it got no answer for; a retry of an item whose first attempt is
still fetching media must wait for that attempt instead of fetching (and delivering) again.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Awaitable, Callable

from relay.model import Inbound, Party

log = logging.getLogger(__name__)


class Intake:
    """Runs each webhook item's work once at a time per key and remembers recent successes."""

    def __init__(self, remember: int = 4096) -> None:
        self._inflight: dict[str, asyncio.Future[None]] = {}
        self._done: OrderedDict[str, None] = OrderedDict()
        self._remember = remember

    def seen(self, key: str) -> bool:
        """True when `key` was delivered successfully in this process (a fast retry)."""
        return key in self._done

    async def once(self, key: str, work: Callable[[], Awaitable[None]]) -> None:
        """Run `work` for `key` unless it succeeded already; join an attempt in flight.

        Raises what `work` raised, so the caller answers the network with an error and the
        network retries. The work is shielded: a dropped webhook connection does not cancel
        a half-done delivery.
        """
        if key in self._done:
            return
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.ensure_future(work())
            self._inflight[key] = task
            task.add_done_callback(lambda t: self._finish(key, t))
        await asyncio.shield(task)

    def _finish(self, key: str, task: asyncio.Future[None]) -> None:
        self._inflight.pop(key, None)
        if task.cancelled():
            return
        if task.exception() is not None:
            return
        self._done[key] = None
        while len(self._done) > self._remember:
            self._done.popitem(last=False)

    async def drain(self) -> None:
        """Wait for every item in flight (used on stop)."""
        pending = list(self._inflight.values())
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)


def body_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def raw_event(channel: str, body: bytes, why: str, digest_of: bytes | None = None) -> Inbound:
    """A correctly signed body the adapter cannot read: journaled whole as one `event`.

    Its platform id comes from the body's digest, so a redelivery of the same body dedupes.
    """
    digest = body_digest(body if digest_of is None else digest_of)
    return Inbound(
        channel=channel,
        platform_id=f"raw:{digest}",
        sender=Party(channel, "unknown"),
        chat="unknown",
        kind="event",
        text=f"unparsable webhook: {why}"[:500],
        raw=body,
    )



@dataclass(frozen=True)
class MediaRef:
    """A file named in a webhook that the adapter still has to fetch from the network."""

    media_id: str
    mime: str
    name: str
    declared_size: int | None = None
    declared_sha256: str = ""


@dataclass(frozen=True)
class Item:
    """One parsed webhook item: the Inbound (without attachment bytes) and what to fetch.

    `touches_window` says the client interacted (opens or refreshes the service window).
    `account` is the business number the network addressed the item to (WhatsApp's
    `metadata.phone_number_id`; '' when the payload names none).
    """

    inbound: Inbound
    media: tuple[MediaRef, ...] = ()
    touches_window: bool = False
    account: str = ""

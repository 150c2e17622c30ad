"""The calls that queue work for a group-commit writer, the same for both backends: events are
validated and encoded here, at the call, so the writer only numbers and hashes them."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from relay.journal.chain import Event, canonical_json, canonical_parts, canonical_str
from relay.journal.opening import JournalError
from relay.journal.writer import Item, Unit


def _check_utf8(kind: str, text: str) -> None:
    """A lone surrogate is valid JSON but cannot be stored: refused at the call, nothing queued."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"{kind} event not journaled: its body holds a lone surrogate (U+{ord(exc.object[exc.start]):04X}),"
            " which is not Unicode text; make the text valid first (relay.valid_input)") from None


class Submitting:
    """Mixed into `Journal` (SQLite) and `PgJournal`, which run the writer task draining `_queue`."""

    _kind_json: dict[str, str]
    _queue: deque[Unit]
    _wake: asyncio.Event
    _closing: bool
    _writer_task: asyncio.Task[None] | None

    def _item(self, kind: str, body: dict[str, Any], conversation: str | None, ts: float) -> Item:
        if not isinstance(kind, str) or not kind:
            raise ValueError("event kind must be a non-empty string")
        if not isinstance(body, dict):
            raise TypeError(f"event body must be a dict, not {type(body).__name__}")
        if conversation is not None and not isinstance(conversation, str):
            raise TypeError("conversation must be a string or None")
        kind_json = self._kind_json.get(kind)
        if kind_json is None:
            kind_json = self._kind_json[kind] = canonical_json(kind)
        conv_json = "null" if conversation is None else canonical_str(conversation)
        body_json = canonical_json(body)
        if not (body_json.isascii() and conv_json.isascii() and kind_json.isascii()):
            _check_utf8(kind, kind_json + body_json + conv_json)
        head, tail = canonical_parts(ts, kind_json, conv_json, body_json)
        return (kind, conversation, body_json, body, ts, head, tail)

    def _submit(self, unit: Unit) -> None:
        if self._closing or self._writer_task is None:
            raise JournalError("journal is closed" if self._closing else "journal was opened read-only")
        self._queue.append(unit)
        self._wake.set()

    def append(self, kind: str, body: dict[str, Any], conversation: str | None = None) -> asyncio.Future[Event]:
        """Await it: resolves after the transaction holding the event has committed.

        Submitted at the call (a bad event raises there), in call order. A future rather than a
        coroutine: one task step and one frame fewer per event on the event loop.
        """
        item = self._item(kind, body, conversation, time.time())
        future: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
        self._submit(Unit([item], future, single=True))
        return future

    async def append_many(
        self, events: Sequence[tuple[str, dict[str, Any], str | None]], unless_message: str | None = None
    ) -> list[Event] | None:
        """All in one transaction, consecutive and in order.

        With `unless_message`, the writer first checks the `messages` projection for that id and
        appends nothing (returning None) if it is there: deduplication decided by the only
        writer, so two redeliveries can never both be journaled, and without a read per call.
        """
        return await self.submit_many(events, unless_message)

    def submit_many(
        self, events: Sequence[tuple[str, dict[str, Any], str | None]], unless_message: str | None = None
    ) -> asyncio.Future[list[Event] | None]:
        """`append_many` in two steps: the order is fixed now, the future resolves at commit.

        A caller holding a lock can submit, release the lock and then await, so consecutive
        events of one conversation keep their order and still share a group commit.
        """
        future: asyncio.Future[list[Event] | None] = asyncio.get_running_loop().create_future()
        if not events:
            future.set_result([])
            return future
        now = time.time()
        items = [self._item(kind, body, conversation, now) for kind, body, conversation in events]
        self._submit(Unit(items, future, unless=unless_message))
        return future

    async def kv_put(self, namespace: str, key: str, value: str | None) -> None:
        """Adapter state (not chained); returns after commit. A None value deletes the key."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._submit(Unit([], future, kv=(namespace, key, value)))
        await future

    async def rebuild(self) -> int:
        """Drop the projections and replay every event, in one transaction; returns the count."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._submit(Unit([], future, rebuild=True))
        return await future

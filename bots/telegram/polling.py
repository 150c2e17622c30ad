"""Telegram updates by long polling (getUpdates): the offset that acknowledges updates to
Telegram moves only past what the hub journaled, never past an album still being gathered,
and is stored so a restart fetches again from the first update not journaled."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable

from telegram import Bot, Update
from telegram.error import Conflict, RetryAfter, TelegramError

from bots.base import StateStore
from bots.telegram.backoff import Backoff, retrying
from bots.telegram.format import media_group, update_chat_id
from bots.telegram.sender import retry_seconds
from bots.telegram.settings import TelegramSettings
from bots.telegram.updates import Album, DeliverUnit, Unit

log = logging.getLogger("relay.telegram")


class _DeliveryFailed(Exception):
    """An update could not be handed to the hub; it stays unacknowledged and comes again."""

    def __init__(self, update_id: int) -> None:
        super().__init__(f"update {update_id} not delivered")
        self.update_id = update_id


class Poller:
    """The getUpdates loop of one bot; `deliver_unit` returns once the hub journaled a unit."""

    def __init__(self, name: str, cfg: TelegramSettings, bot: Bot, state: StateStore,
                 ensure_init: Callable[[], Awaitable[None]], deliver_unit: DeliverUnit) -> None:
        self.name = name
        self.cfg = cfg
        self.bot = bot
        self.state = state
        self._ensure_init = ensure_init
        self._deliver_unit = deliver_unit
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._offset: int | None = None
        self._stored: int | None = None
        self._next = 0
        self._albums: dict[tuple[str, str], Album] = {}

    def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._poll(), name=f"telegram:{self.name}")

    async def stop(self) -> None:
        self._stopping = True
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        self._albums.clear()

    async def _poll(self) -> None:
        await retrying(self.name, "connect", self._ensure_init, self.cfg.backoff_max)
        await retrying(
            self.name, "deleteWebhook", lambda: self.bot.delete_webhook(drop_pending_updates=False), self.cfg.backoff_max
        )
        await retrying(self.name, "read the stored offset", self._load_offset, self.cfg.backoff_max)
        backoff = Backoff(0.5, self.cfg.backoff_max)
        while not self._stopping:
            try:
                await self._poll_once()
                backoff.reset()
                continue
            except asyncio.CancelledError:
                raise
            except RetryAfter as exc:
                await asyncio.sleep(retry_seconds(exc))
                continue
            except Conflict as exc:
                log.warning("%s: getUpdates conflict (%s); removing the webhook", self.name, exc.message)
                try:
                    await self.bot.delete_webhook(drop_pending_updates=False)
                except TelegramError:
                    pass
            except TelegramError as exc:
                log.warning("%s: getUpdates failed (%s); reconnecting", self.name, exc.message)
            except _DeliveryFailed as exc:
                log.warning("%s: delivery failed; update %d will be fetched again", self.name, exc.update_id)
            except Exception:
                log.exception("%s: polling step failed; fetching again from the last journaled update", self.name)
                self._albums.clear()
                self._next = self._offset or 0
            await asyncio.sleep(backoff.delay())

    async def _load_offset(self) -> None:
        stored = await self.state.get("offset")
        self._offset = int(stored) if stored else None
        self._stored = self._offset
        self._next = self._offset or 0

    async def _poll_once(self) -> None:
        """One getUpdates round: deliver what came, then move the offset past what is journaled."""
        if self._albums:
            await asyncio.sleep(max(0.0, min(self._album_due_in(), 0.2)))
            timeout = 0.0
        else:
            timeout = self.cfg.poll_timeout
        batch = await self._get_updates(timeout)
        units = self._take(batch) + self._due_albums()
        failed = await self._deliver_units(units)
        if failed is not None:
            self._albums.clear()
            self._next = failed
        await self._commit(failed)
        if failed is not None:
            raise _DeliveryFailed(failed)

    async def _get_updates(self, timeout: float) -> list[dict[str, Any]]:
        """getUpdates returning the raw update objects (relay journals the wire form)."""
        data: dict[str, Any] = {"timeout": int(timeout), "allowed_updates": Update.ALL_TYPES}
        if self._offset is not None:
            data["offset"] = self._offset
        result = await self.bot._post(  # noqa: SLF001  the raw JSON, not parsed objects
            "getUpdates", data, read_timeout=self.cfg.request_timeout + timeout
        )
        return [u for u in result if isinstance(u, dict) and isinstance(u.get("update_id"), int)]

    def _take(self, batch: list[dict[str, Any]]) -> list[Unit]:
        """New updates → units to deliver now, in order; album parts wait in `_albums`."""
        units: list[Unit] = []
        now = time.monotonic()
        for update in batch:
            uid = update["update_id"]
            if uid < self._next:
                continue
            self._next = uid + 1
            chat = update_chat_id(update)
            group = media_group(update)
            key = (chat, group or "")
            if group and key in self._albums:
                album = self._albums[key]
                album.unit.updates.append(update)
                album.deadline = now + self.cfg.album_window
                continue
            units.extend(self._pop_chat_albums(chat))
            if group:
                self._albums[key] = Album(Unit([update], chat), now + self.cfg.album_window)
            else:
                units.append(Unit([update], chat))
        return units

    def _pop_chat_albums(self, chat: str) -> list[Unit]:
        keys = [k for k in self._albums if k[0] == chat]
        return [self._albums.pop(k).unit for k in sorted(keys, key=lambda k: self._albums[k].unit.first_id)]

    def _album_due_in(self) -> float:
        return min(a.deadline for a in self._albums.values()) - time.monotonic()

    def _due_albums(self) -> list[Unit]:
        now = time.monotonic()
        due = sorted((a.unit for a in self._albums.values() if a.deadline <= now), key=lambda u: u.first_id)
        for unit in due:
            self._albums.pop((unit.chat, media_group(unit.updates[0]) or ""), None)
        return due

    async def _deliver_units(self, units: list[Unit]) -> int | None:
        """Deliver units, chats concurrently and each chat in order; the first update id not
        delivered (None when all were)."""
        by_chat: dict[str, list[Unit]] = {}
        for unit in units:
            by_chat.setdefault(unit.chat, []).append(unit)

        async def run(chat_units: list[Unit]) -> int | None:
            for unit in chat_units:
                try:
                    await self._deliver_unit(unit)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("%s: delivering update %d failed: %s", self.name, unit.first_id, type(exc).__name__)
                    return unit.first_id
            return None

        results = await asyncio.gather(*(run(us) for us in by_chat.values()))
        failed = [r for r in results if r is not None]
        return min(failed) if failed else None

    async def _commit(self, failed: int | None) -> None:
        """Advance the getUpdates offset past everything journaled, never past a pending album."""
        candidates = [self._next]
        candidates += [a.unit.first_id for a in self._albums.values()]
        if failed is not None:
            candidates.append(failed)
        offset = min(candidates)
        if offset > 0 and (self._offset is None or offset > self._offset):
            self._offset = offset
        if self._offset is not None and self._offset != self._stored:
            await self.state.put("offset", str(self._offset))
            self._stored = self._offset

"""Telegram updates by webhook: Telegram's HTTP request is answered only after the hub
journaled the update (an album: after the whole group was delivered), so a failure makes
Telegram send it again; the secret token header is checked before the body is read."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from typing import Any, Awaitable, Callable

from aiohttp import web
from telegram import Bot, Update

from bots.base import ChannelContext
from bots.telegram.backoff import retrying
from bots.telegram.format import media_group, update_chat_id
from bots.telegram.settings import TelegramSettings
from bots.telegram.updates import Album, DeliverUnit, Unit
from bots.webhooks.body import TELEGRAM_MAX_BODY, BodyTooLarge, Refusals, read_body

log = logging.getLogger("relay.telegram")

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


class WebhookIntake:
    """The webhook route of one bot (added to the relay's web app) and its album gathering."""

    def __init__(self, name: str, cfg: TelegramSettings, ctx: ChannelContext, bot: Bot,
                 ensure_init: Callable[[], Awaitable[None]], deliver_unit: DeliverUnit) -> None:
        self.name = name
        self.cfg = cfg
        self.ctx = ctx
        self.bot = bot
        self._ensure_init = ensure_init
        self._deliver_unit = deliver_unit
        self._task: asyncio.Task[None] | None = None
        self._running = False
        self._albums: dict[tuple[str, str], Album] = {}
        self._chat_locks: dict[str, asyncio.Lock] = {}
        self._refusals = Refusals()
        ctx.app.router.add_post(cfg.webhook_path, self._on_webhook)

    def start(self) -> None:
        self._running = True
        self._task = asyncio.create_task(self._register_webhook(), name=f"telegram:{self.name}")

    async def stop(self) -> None:
        self._running = False
        self._refusals.drop()
        tasks = [a.timer for a in self._albums.values() if a.timer]
        if self._task:
            tasks.append(self._task)
        for task in tasks:
            task.cancel()
        for task in tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        for album in self._albums.values():
            if album.done is not None and not album.done.done():
                album.done.set_exception(ConnectionAbortedError("channel stopping"))
                album.done.exception()
        self._albums.clear()

    async def _register_webhook(self) -> None:
        url = self.ctx.public_url.rstrip("/") + self.cfg.webhook_path
        await retrying(self.name, "connect", self._ensure_init, self.cfg.backoff_max)
        await retrying(
            self.name,
            "setWebhook",
            lambda: self.bot.set_webhook(
                url=url, secret_token=self.cfg.webhook_secret, allowed_updates=Update.ALL_TYPES, max_connections=40
            ),
            self.cfg.backoff_max,
        )
        log.info("%s: webhook set to %s", self.name, url)

    async def _on_webhook(self, request: web.Request) -> web.StreamResponse:
        given = request.headers.get(SECRET_HEADER, "")
        if not hmac.compare_digest(given.encode(), self.cfg.webhook_secret.encode()):
            return web.json_response({"ok": False, "error": "wrong secret token"}, status=401)
        if not self._running:
            return web.json_response({"ok": False, "error": "channel not started"}, status=503)
        try:
            body = await read_body(request, "Telegram", TELEGRAM_MAX_BODY, "application/json")
        except BodyTooLarge as exc:
            return await self._refusals.answer(request, exc)
        try:
            update = json.loads(body)
        except ValueError:
            return web.json_response({"ok": False, "error": "body is not JSON"}, status=400)
        if not isinstance(update, dict) or not isinstance(update.get("update_id"), int):
            return web.json_response({"ok": False, "error": "not a Telegram update"}, status=400)
        try:
            await self._hook_update(update, body)
        except Exception as exc:
            log.warning("%s: webhook update %s not delivered: %s", self.name, update.get("update_id"), type(exc).__name__)
            return web.json_response({"ok": False, "error": "not journaled, send again"}, status=500)
        return web.json_response({"ok": True})

    def _chat_lock(self, chat: str) -> asyncio.Lock:
        return self._chat_locks.setdefault(chat, asyncio.Lock())

    async def _hook_update(self, update: dict[str, Any], body: bytes) -> None:
        """`body` is the POST body as received: the journal keeps it, not a re-encoded copy."""
        chat = update_chat_id(update)
        group = media_group(update)
        if not group:
            async with self._chat_lock(chat):
                await self._flush_hook_albums(chat)
                await self._deliver_unit(Unit([update], chat, {update["update_id"]: body}))
            return
        key = (chat, group)
        album = self._albums.get(key)
        if album is None:
            loop = asyncio.get_running_loop()
            album = Album(Unit([], chat), 0.0, done=loop.create_future())
            self._albums[key] = album
            album.timer = asyncio.create_task(self._album_timer(key, album))
        if update["update_id"] not in album.ids:
            album.ids.add(update["update_id"])
            album.unit.received[update["update_id"]] = body
            album.unit.updates.append(update)
            album.unit.updates.sort(key=lambda u: u["update_id"])
        album.deadline = time.monotonic() + self.cfg.album_window
        assert album.done is not None
        await asyncio.shield(album.done)

    async def _album_timer(self, key: tuple[str, str], album: Album) -> None:
        while (wait := album.deadline - time.monotonic()) > 0:
            await asyncio.sleep(wait)
        async with self._chat_lock(key[0]):
            if self._albums.get(key) is album:
                await self._finish_hook_album(key, album)

    async def _flush_hook_albums(self, chat: str) -> None:
        for key in [k for k in self._albums if k[0] == chat]:
            album = self._albums[key]
            if album.timer:
                album.timer.cancel()
            await self._finish_hook_album(key, album)

    async def _finish_hook_album(self, key: tuple[str, str], album: Album) -> None:
        self._albums.pop(key, None)
        assert album.done is not None
        try:
            await self._deliver_unit(album.unit)
        except Exception as exc:
            if not album.done.done():
                album.done.set_exception(exc)
                album.done.exception()
            return
        if not album.done.done():
            album.done.set_result(None)

"""Telegram channel: python-telegram-bot's `Bot` on either side of a desk.

Client side: private chats with the bot. Staff side: a forum supergroup with one topic per
conversation (bots/telegram_topics.py); sending is bots/telegram_sender.py. Updates are acknowledged to Telegram (the getUpdates offset, or the webhook's
HTTP answer) only after `deliver` returned, i.e. after the hub journaled them; that is why
PTB's Application/Updater, which acknowledges by itself, is not used.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Mapping

from aiohttp import web
from telegram import Bot, Update
from telegram.error import BadRequest, Conflict, Forbidden, InvalidToken, RetryAfter, TelegramError
from telegram.request import HTTPXRequest

from bots.base import ChannelConfigError, ChannelContext, Deliver
from bots.telegram_format import (
    MESSAGE_UPDATES,
    FileRef,
    contact_card,
    content_key,
    display_name,
    is_supported,
    media_group,
    message_files,
    message_text,
    raw_bytes,
    update_chat_id,
    update_kind,
    update_payload,
    update_sender,
)
from bots.telegram_sender import TelegramSender, delivery_error, retry_seconds
from bots.telegram_topics import TopicMap
from bots.webhook_body import TELEGRAM_MAX_BODY, BodyTooLarge, Refusals, read_body
from relay.model import Attachment, Inbound, Outgoing, Party

log = logging.getLogger("relay.telegram")

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


@dataclass(frozen=True)
class TelegramSettings:
    """A validated channel block (see config.example.yaml)."""

    token: str
    side: str
    mode: str = "polling"
    webhook_secret: str = ""
    webhook_path: str = ""
    base_url: str = "https://api.telegram.org/bot"
    base_file_url: str = "https://api.telegram.org/file/bot"
    staff_group: int | None = None
    poll_timeout: float = 30.0
    album_window: float = 1.0
    request_timeout: float = 10.0
    backoff_max: float = 30.0
    max_concurrent_sends: int = 4
    """Requests in flight at once. Telegram allows about 30 messages/s per bot and 20 per
    minute into one group, so the staff side (one group) needs fewer than the client side."""


def parse_settings(name: str, settings: Mapping[str, Any], ctx: ChannelContext) -> TelegramSettings:
    """Check a channel block; every problem names the channel and the field."""

    def fail(key: str, why: str) -> ChannelConfigError:
        return ChannelConfigError(f"channels.{name}.{key}: {why}")

    known = {
        "token", "side", "mode", "webhook_secret", "webhook_path", "base_url", "base_file_url",
        "staff_group", "poll_timeout", "album_window", "request_timeout", "backoff_max", "max_concurrent_sends",
    }
    for key in settings:
        if key not in known:
            raise fail(key, f"unknown setting (known: {', '.join(sorted(known))})")
    token = str(settings.get("token") or "").strip()
    if not token:
        raise fail("token", "missing bot token (use token: ${TELEGRAM_TOKEN})")
    side = str(settings.get("side") or ctx.side)
    if side not in ("client", "staff"):
        raise fail("side", f"must be client or staff, not {side!r}")
    mode = str(settings.get("mode", "polling"))
    if mode not in ("polling", "webhook"):
        raise fail("mode", f"must be polling or webhook, not {mode!r}")
    secret = str(settings.get("webhook_secret") or "")
    if mode == "webhook":
        if not secret or len(secret) > 256 or not all(c.isalnum() or c in "_-" for c in secret):
            raise fail("webhook_secret", "webhook mode needs a secret of 1-256 characters A-Z a-z 0-9 _ -")
    staff_group: int | None = None
    if side == "staff":
        raw_group = settings.get("staff_group")
        try:
            staff_group = int(str(raw_group))
        except ValueError:
            raise fail("staff_group", "the staff side needs the chat id of the forum supergroup (e.g. -1001234567890)") from None

    def number(key: str, default: float, minimum: float) -> float:
        value = settings.get(key, default)
        try:
            out = float(value)
        except (TypeError, ValueError):
            raise fail(key, f"must be a number, not {value!r}") from None
        if out < minimum:
            raise fail(key, f"must be at least {minimum}")
        return out

    return TelegramSettings(
        token=token,
        side=side,
        mode=mode,
        webhook_secret=secret,
        webhook_path=str(settings.get("webhook_path") or f"/telegram/{name}"),
        base_url=str(settings.get("base_url") or "https://api.telegram.org/bot"),
        base_file_url=str(settings.get("base_file_url") or "https://api.telegram.org/file/bot"),
        staff_group=staff_group,
        poll_timeout=number("poll_timeout", 30.0, 0.0),
        album_window=number("album_window", 1.0, 0.0),
        request_timeout=number("request_timeout", 10.0, 0.1),
        backoff_max=number("backoff_max", 30.0, 0.1),
        max_concurrent_sends=int(number("max_concurrent_sends", 2 if side == "staff" else 4, 1)),
    )


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


class _DeliveryFailed(Exception):
    """An update could not be handed to the hub; it stays unacknowledged and comes again."""

    def __init__(self, update_id: int) -> None:
        super().__init__(f"update {update_id} not delivered")
        self.update_id = update_id


@dataclass
class _Unit:
    """What is delivered as one Inbound: one update, or all updates of an album."""

    updates: list[dict[str, Any]]
    chat: str

    @property
    def first_id(self) -> int:
        return int(self.updates[0]["update_id"])


@dataclass
class _Album:
    unit: _Unit
    deadline: float
    done: asyncio.Future[None] | None = None
    timer: asyncio.Task[None] | None = None
    ids: set[int] = field(default_factory=set)


class TelegramChannel:
    """One configured Telegram bot; see the module docstring."""

    def __init__(self, name: str, cfg: TelegramSettings, ctx: ChannelContext) -> None:
        self.name = name
        self.cfg = cfg
        self.ctx = ctx
        self._refusals = Refusals()
        timeout = cfg.request_timeout
        self.bot = Bot(
            cfg.token,
            base_url=cfg.base_url,
            base_file_url=cfg.base_file_url,
            request=HTTPXRequest(
                connection_pool_size=cfg.max_concurrent_sends,
                read_timeout=timeout,
                write_timeout=timeout,
                connect_timeout=timeout,
                pool_timeout=timeout,
                media_write_timeout=max(timeout, 20.0),
            ),
            get_updates_request=HTTPXRequest(
                connection_pool_size=2,
                read_timeout=timeout,
                write_timeout=timeout,
                connect_timeout=timeout,
                pool_timeout=timeout,
            ),
        )
        self.topics = TopicMap(self.bot, ctx.state, cfg.staff_group) if cfg.staff_group is not None else None
        self.sender = TelegramSender(self.bot, ctx.state, cfg.side, self.topics, cfg.max_concurrent_sends)
        self._deliver: Deliver | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._initialized = False
        self._init_lock = asyncio.Lock()
        self._offset: int | None = None
        self._stored: int | None = None
        self._next = 0
        self._albums: dict[tuple[str, str], _Album] = {}
        self._chat_locks: dict[str, asyncio.Lock] = {}
        if cfg.mode == "webhook":
            ctx.app.router.add_post(cfg.webhook_path, self._on_webhook)

    # ----- lifecycle -----

    async def start(self, deliver: Deliver) -> None:
        self._deliver = deliver
        self._stopping = False
        runner = self._poll if self.cfg.mode == "polling" else self._register_webhook
        self._task = asyncio.create_task(runner(), name=f"telegram:{self.name}")

    async def stop(self) -> None:
        self._stopping = True
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
        try:
            await self.bot.shutdown()
        except Exception as exc:
            log.debug("%s: shutdown: %r", self.name, exc)
        self._initialized = False

    async def _ensure_init(self) -> None:
        if self._initialized:
            return
        async with self._init_lock:
            if not self._initialized:
                await self.bot.initialize()
                self._initialized = True

    async def _retrying(self, what: str, step: Callable[[], Awaitable[Any]]) -> Any:
        """Run a setup call until it succeeds, backing off on every failure."""
        backoff = Backoff(0.5, self.cfg.backoff_max)
        while True:
            try:
                return await step()
            except RetryAfter as exc:
                await asyncio.sleep(retry_seconds(exc))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                delay = backoff.delay()
                why = exc.message if isinstance(exc, TelegramError) else repr(exc)
                log.warning("%s: %s failed (%s); retrying in %.1f s", self.name, what, why, delay)
                await asyncio.sleep(delay)

    # ----- receiving: long polling -----

    async def _poll(self) -> None:
        await self._retrying("connect", self._ensure_init)
        await self._retrying("deleteWebhook", lambda: self.bot.delete_webhook(drop_pending_updates=False))
        await self._retrying("read the stored offset", self._load_offset)
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
        stored = await self.ctx.state.get("offset")
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

    def _take(self, batch: list[dict[str, Any]]) -> list[_Unit]:
        """New updates → units to deliver now, in order; album parts wait in `_albums`."""
        units: list[_Unit] = []
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
                self._albums[key] = _Album(_Unit([update], chat), now + self.cfg.album_window)
            else:
                units.append(_Unit([update], chat))
        return units

    def _pop_chat_albums(self, chat: str) -> list[_Unit]:
        keys = [k for k in self._albums if k[0] == chat]
        return [self._albums.pop(k).unit for k in sorted(keys, key=lambda k: self._albums[k].unit.first_id)]

    def _album_due_in(self) -> float:
        return min(a.deadline for a in self._albums.values()) - time.monotonic()

    def _due_albums(self) -> list[_Unit]:
        now = time.monotonic()
        due = sorted((a.unit for a in self._albums.values() if a.deadline <= now), key=lambda u: u.first_id)
        for unit in due:
            self._albums.pop((unit.chat, media_group(unit.updates[0]) or ""), None)
        return due

    async def _deliver_units(self, units: list[_Unit]) -> int | None:
        """Deliver units, chats concurrently and each chat in order; the first update id not
        delivered (None when all were)."""
        by_chat: dict[str, list[_Unit]] = {}
        for unit in units:
            by_chat.setdefault(unit.chat, []).append(unit)

        async def run(chat_units: list[_Unit]) -> int | None:
            for unit in chat_units:
                try:
                    await self._deliver_unit(unit)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("%s: delivering update %d failed: %r", self.name, unit.first_id, exc)
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
            await self.ctx.state.put("offset", str(self._offset))
            self._stored = self._offset

    # ----- receiving: webhook -----

    async def _register_webhook(self) -> None:
        url = self.ctx.public_url.rstrip("/") + self.cfg.webhook_path
        await self._retrying("connect", self._ensure_init)
        await self._retrying(
            "setWebhook",
            lambda: self.bot.set_webhook(
                url=url, secret_token=self.cfg.webhook_secret, allowed_updates=Update.ALL_TYPES, max_connections=40
            ),
        )
        log.info("%s: webhook set to %s", self.name, url)

    async def _on_webhook(self, request: web.Request) -> web.StreamResponse:
        given = request.headers.get(SECRET_HEADER, "")
        if not hmac.compare_digest(given.encode(), self.cfg.webhook_secret.encode()):
            return web.json_response({"ok": False, "error": "wrong secret token"}, status=401)
        if self._deliver is None or self._stopping:
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
            await self._hook_update(update)
        except Exception as exc:
            log.warning("%s: webhook update %s not delivered: %r", self.name, update.get("update_id"), exc)
            return web.json_response({"ok": False, "error": "not journaled, send again"}, status=500)
        return web.json_response({"ok": True})

    def _chat_lock(self, chat: str) -> asyncio.Lock:
        return self._chat_locks.setdefault(chat, asyncio.Lock())

    async def _hook_update(self, update: dict[str, Any]) -> None:
        chat = update_chat_id(update)
        group = media_group(update)
        if not group:
            async with self._chat_lock(chat):
                await self._flush_hook_albums(chat)
                await self._deliver_unit(_Unit([update], chat))
            return
        key = (chat, group)
        album = self._albums.get(key)
        if album is None:
            loop = asyncio.get_running_loop()
            album = _Album(_Unit([], chat), 0.0, done=loop.create_future())
            self._albums[key] = album
            album.timer = asyncio.create_task(self._album_timer(key, album))
        if update["update_id"] not in album.ids:
            album.ids.add(update["update_id"])
            album.unit.updates.append(update)
            album.unit.updates.sort(key=lambda u: u["update_id"])
        album.deadline = time.monotonic() + self.cfg.album_window
        assert album.done is not None
        await asyncio.shield(album.done)

    async def _album_timer(self, key: tuple[str, str], album: _Album) -> None:
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

    async def _finish_hook_album(self, key: tuple[str, str], album: _Album) -> None:
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

    # ----- update → Inbound -----

    async def _deliver_unit(self, unit: _Unit) -> None:
        assert self._deliver is not None
        try:
            inbound = await self._inbound(unit)
        except (TelegramError, asyncio.CancelledError):
            raise
        except Exception as exc:
            log.warning("%s: update %d is not shaped as documented (%r); journaled as an event", self.name, unit.first_id, exc)
            raw = json.dumps(unit.updates, ensure_ascii=False).encode()
            inbound = Inbound(
                channel=self.name, platform_id=f"update:{unit.first_id}", sender=Party(self.name, ""),
                chat=unit.chat if self.cfg.side == "client" else "", kind="event",
                text=f"[telegram update relay could not read: {exc!r}]", raw=raw,
            )
        await self._deliver(inbound)
        if len(unit.updates) > 1:
            first = unit.updates[0]["message"]
            for update in unit.updates[1:]:
                msg = update["message"]
                await self.ctx.state.put(f"album:{msg['chat']['id']}:{msg['message_id']}", str(first["message_id"]))

    async def _inbound(self, unit: _Unit) -> Inbound:
        first = unit.updates[0]
        kind = update_kind(first)
        raw = raw_bytes(first) if len(unit.updates) == 1 else json.dumps(unit.updates, ensure_ascii=False).encode()
        if kind not in MESSAGE_UPDATES:
            return await self._event(first, raw, f"[telegram {kind}]")
        msg = update_payload(first)
        chat = msg.get("chat") or {}
        chat_id = str(chat.get("id", ""))
        conversation = chat_id
        if self.cfg.side == "client":
            if chat.get("type") != "private":
                return await self._event(first, raw, f"[telegram {kind} in a {chat.get('type', 'unknown')} chat]")
        else:
            if chat_id != str(self.cfg.staff_group):
                return await self._event(first, raw, f"[telegram {kind} outside the staff group]")
            thread = msg.get("message_thread_id") if msg.get("is_topic_message") else None
            found = await self._conversation_of(thread) if thread is not None else None
            if found is None:
                return await self._event(first, raw, f"[telegram {kind} outside a conversation topic]")
            conversation = found
        messages = [update_payload(u) for u in unit.updates]
        if not any(is_supported(m) for m in messages):
            return await self._event(first, raw, f"[telegram {content_key(msg)}]")
        texts = [message_text(m) for m in messages]
        attachments: list[Attachment] = []
        for m in messages:
            for ref in message_files(m):
                attachments.append(await self._fetch(ref))
            card = contact_card(m)
            if card:
                attachments.append(Attachment.of("contact.vcf", "text/vcard", card))
        user = msg.get("from") or msg.get("sender_chat") or {}
        sender = Party(self.name, str(user.get("id", "")), display_name(user))
        pid = f"{chat_id}:{msg['message_id']}"
        reply = msg.get("reply_to_message")
        reply_to = None
        if isinstance(reply, dict) and reply.get("message_id") not in (None, msg.get("message_thread_id")):
            reply_to = f"{chat_id}:{reply['message_id']}"
        common: dict[str, Any] = dict(
            channel=self.name,
            sender=sender,
            chat=conversation,
            text="\n".join(t for t in texts if t),
            attachments=tuple(attachments),
            reply_to=reply_to,
            raw=raw,
        )
        if kind == "edited_message":
            original = await self.ctx.state.get(f"album:{chat_id}:{msg['message_id']}")
            target = f"{chat_id}:{original}" if original else pid
            edited_at = msg.get("edit_date") or msg.get("date")
            return Inbound(platform_id=f"{pid}:e{edited_at}", kind="edit", edits=target, sent_at=edited_at, **common)
        return Inbound(platform_id=pid, kind="message", sent_at=msg.get("date"), **common)

    async def _event(self, update: dict[str, Any], raw: bytes, text: str) -> Inbound:
        payload = update_payload(update)
        user = update_sender(update)
        chat = update_chat_id(update)
        if "message_id" in payload and chat:
            pid = f"{chat}:{payload['message_id']}"
            if update_kind(update).startswith("edited"):
                pid += f":e{payload.get('edit_date', update['update_id'])}"
        else:
            pid = f"update:{update['update_id']}"
        if self.cfg.side == "staff":
            thread = payload.get("message_thread_id")
            chat = (await self._conversation_of(thread) if isinstance(thread, int) else None) or ""
        elif not chat and user and not user.get("is_bot") and "id" in user:
            chat = str(user["id"])
        sender = Party(self.name, str((user or {}).get("id", "")), display_name(user))
        return Inbound(
            channel=self.name, platform_id=pid, sender=sender, chat=chat, kind="event", text=text,
            sent_at=payload.get("date"), raw=raw,
        )

    async def _conversation_of(self, thread: int) -> str | None:
        return await self.topics.conversation_of(thread) if self.topics is not None else None

    async def _fetch(self, ref: FileRef) -> Attachment:
        """Download a file unless Telegram's declared size is already over the limit."""
        limit = self.ctx.max_attachment_bytes

        def refused(size: int, why: str) -> Attachment:
            return Attachment(ref.name, ref.mime, size, platform_ref=ref.file_id, refused=why)

        if ref.size is not None and ref.size > limit:
            return refused(ref.size, f"too large: {ref.size} > {limit}")
        try:
            file = await self.bot.get_file(ref.file_id)
            if file.file_size is not None and file.file_size > limit:
                return refused(file.file_size, f"too large: {file.file_size} > {limit}")
            data = bytes(await file.download_as_bytearray())
        except (BadRequest, Forbidden, InvalidToken) as exc:
            return refused(ref.size or 0, f"not fetched: {exc.message}")
        if len(data) > limit:
            return refused(len(data), f"too large: {len(data)} > {limit}")
        return Attachment.of(ref.name, ref.mime, data, platform_ref=ref.file_id)

    # ----- sending -----

    async def send(self, out: Outgoing) -> str:
        try:
            await self._ensure_init()
        except TelegramError as exc:
            raise delivery_error(exc, out.kind) from exc
        return await self.sender.send(out)


def create(name: str, settings: Mapping[str, Any], ctx: ChannelContext) -> TelegramChannel:
    """Build the channel from its config block (see config.example.yaml)."""
    return TelegramChannel(name, parse_settings(name, settings, ctx), ctx)

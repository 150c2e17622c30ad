"""Telegram updates into Inbound: one update, or every update of an album, becomes one
message (or an `event` when relay does not translate it), files fetched within the limit.

Nothing here acknowledges anything: the intake (bots/telegram/polling.py, webhook.py) does,
after the hub journaled what `UpdateReader.read` returned.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from telegram import Bot
from telegram.error import BadRequest, Forbidden, InvalidToken, TelegramError

from bots.base import ChannelContext
from bots.telegram.format import (
    MESSAGE_UPDATES,
    FileRef,
    contact_card,
    content_key,
    display_name,
    is_supported,
    message_files,
    message_text,
    raw_bytes,
    update_chat_id,
    update_kind,
    update_payload,
    update_sender,
)
from bots.telegram.settings import TelegramSettings
from bots.telegram.topics import TopicMap, unknown_topic
from relay.model import Attachment, Inbound, Party

log = logging.getLogger("relay.telegram")


@dataclass
class Unit:
    """What is delivered as one Inbound: one update, or all updates of an album."""

    updates: list[dict[str, Any]]
    chat: str
    received: dict[int, bytes] = field(default_factory=dict)
    """update_id → the bytes Telegram sent (a webhook's POST body); empty for polled updates."""

    def raw(self) -> bytes:
        """The unit as received: a webhook body byte for byte (an album: a JSON array of its
        bodies); polled updates compactly encoded, as getUpdates sends them."""
        if self.received and all(u["update_id"] in self.received for u in self.updates):
            parts = [self.received[u["update_id"]] for u in self.updates]
            return parts[0] if len(parts) == 1 else b"[" + b",".join(parts) + b"]"
        if len(self.updates) == 1:
            return raw_bytes(self.updates[0])
        return json.dumps(self.updates, ensure_ascii=False).encode()

    @property
    def first_id(self) -> int:
        return int(self.updates[0]["update_id"])


@dataclass
class Album:
    """Updates of one media group waiting for the rest of the group (up to `album_window`)."""

    unit: Unit
    deadline: float
    done: asyncio.Future[None] | None = None
    timer: asyncio.Task[None] | None = None
    ids: set[int] = field(default_factory=set)


DeliverUnit = Callable[[Unit], Awaitable[None]]
"""Hands a unit to the hub; returns once it is journaled (the channel's `_deliver_unit`)."""


class UpdateReader:
    """Reads the units of one configured bot; `read` never fails on a badly shaped update."""

    def __init__(self, name: str, cfg: TelegramSettings, ctx: ChannelContext, bot: Bot,
                 topics: TopicMap | None) -> None:
        self.name = name
        self.side = cfg.side
        self.staff_group = cfg.staff_group
        self.ctx = ctx
        self.bot = bot
        self.topics = topics

    async def read(self, unit: Unit) -> Inbound:
        """The Inbound for a unit; an update not shaped as documented becomes an `event` that
        keeps its raw JSON, so it is journaled instead of lost."""
        try:
            return await self._inbound(unit)
        except (TelegramError, asyncio.CancelledError):
            raise
        except Exception as exc:
            log.warning("%s: update %d is not shaped as documented (%s); journaled as an event", self.name, unit.first_id,
                        type(exc).__name__)
            raw = unit.raw()
            return Inbound(
                channel=self.name, platform_id=f"update:{unit.first_id}", sender=Party(self.name, ""),
                chat=unit.chat if self.side == "client" else "", kind="event",
                text=f"[telegram update relay could not read: {exc!r}]", raw=raw,
            )

    async def remember(self, unit: Unit) -> None:
        """After an album was delivered: map its later messages to the first, so that an edit of
        any of them edits the one relay message."""
        if len(unit.updates) > 1:
            first = unit.updates[0]["message"]
            for update in unit.updates[1:]:
                msg = update["message"]
                await self.ctx.state.put(f"album:{msg['chat']['id']}:{msg['message_id']}", str(first["message_id"]))

    async def _inbound(self, unit: Unit) -> Inbound:
        first = unit.updates[0]
        kind = update_kind(first)
        raw = unit.raw()
        if kind not in MESSAGE_UPDATES:
            return await self._event(first, raw, f"[telegram {kind}]")
        msg = update_payload(first)
        chat = msg.get("chat") or {}
        chat_id = str(chat.get("id", ""))
        conversation = chat_id
        if self.side == "client":
            if chat.get("type") != "private":
                return await self._event(first, raw, f"[telegram {kind} in a {chat.get('type', 'unknown')} chat]")
        else:
            if chat_id != str(self.staff_group):
                return await self._event(first, raw, f"[telegram {kind} outside the staff group]")
            thread = msg.get("message_thread_id") if msg.get("is_topic_message") else None
            found = await self._conversation_of(thread) if thread is not None else None
            if found is None and not (thread is not None and kind == "message" and is_supported(msg)
                                      and not (msg.get("from") or {}).get("is_bot")):
                return await self._event(first, raw, f"[telegram {kind} outside a conversation topic]")
            # a message in a topic relay does not know goes to the hub, which refuses it and
            # answers the writer in that topic (`unknown_topic`), as it answers a non-employee
            conversation = found if found is not None else unknown_topic(int(thread))
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
        if self.side == "staff":
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

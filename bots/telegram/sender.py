"""Sending through the Telegram Bot API: splitting to Telegram's limits, files with the matching
method, edits and deletes of every part, and PTB errors mapped to the outbox's terms.

Platform ids are `chat:message_id`. A message sent in several parts (split text, a caption
continued as text, an album) is known by its first part; the parts are kept in the channel's
state so an edit or delete reaches all of them, and a multi-part send resumed after a failure
does not repeat the parts already sent.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import timedelta
from typing import Any, Awaitable, Callable

from telegram import Bot, InputFile, InputMediaAudio, InputMediaDocument, InputMediaPhoto, InputMediaVideo
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Forbidden,
    InvalidToken,
    RetryAfter,
    TelegramError,
    TimedOut,
)

from bots.base import DeliveryError, Permanent, Retryable, StateStore
from bots.telegram.format import CAPTION_LIMIT, TEXT_LIMIT, split_text
from bots.telegram.topics import UNKNOWN_TOPIC, TopicMap, topic_lost
from relay.model import Attachment, Outgoing

log = logging.getLogger("relay.telegram")

PHOTO_MAX = 10 * 1024 * 1024
Reopened = Callable[[str, str], Awaitable[None]]
"""`ChannelContext.reopened`: (employee address, conversation) whose topic was opened anew."""


def retry_seconds(exc: RetryAfter) -> float:
    """Telegram's retry_after in seconds, whichever type this PTB version gives it."""
    value = getattr(exc, "_retry_after", None)
    if value is None:
        value = exc.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def delivery_error(exc: TelegramError, what: str) -> DeliveryError:
    """Map a PTB error to the outbox's terms: Retryable (429, 5xx, timeouts, network) or Permanent."""
    if isinstance(exc, RetryAfter):
        after = retry_seconds(exc)
        return Retryable(f"telegram {what}: flood control, retry after {after:g} s", after=after)
    if isinstance(exc, ChatMigrated):
        return Permanent(f"telegram {what}: chat migrated to {exc.new_chat_id}")
    if isinstance(exc, (Forbidden, BadRequest)):
        return Permanent(f"telegram {what}: {exc.message}")
    if isinstance(exc, InvalidToken):
        return Retryable(f"telegram {what}: bot token rejected ({exc.message}); check the channel's token", after=60.0)
    if isinstance(exc, TimedOut):
        return Retryable(f"telegram {what}: timed out")
    return Retryable(f"telegram {what}: {exc.message}")


def _not_modified(exc: TelegramError) -> bool:
    return isinstance(exc, BadRequest) and "not modified" in exc.message.lower()


def _split_pid(pid: str) -> tuple[int | str, int]:
    chat, _, mid = pid.partition(":")
    mid = mid.split(":", 1)[0]
    try:
        return int(chat), int(mid)
    except ValueError:
        raise Permanent(f"telegram: {pid!r} is not a platform id of this channel (chat:message_id)") from None


def _file_kind(att: Attachment) -> str:
    mime = att.mime.lower()
    if mime in ("image/jpeg", "image/png") and att.size <= PHOTO_MAX:
        return "photo"
    if mime == "video/mp4":
        return "video"
    if mime == "audio/ogg" and att.name.startswith("voice"):
        return "voice"
    if mime in ("audio/mpeg", "audio/mp4", "audio/x-m4a", "audio/mp3"):
        return "audio"
    return "document"


def _file_groups(files: list[Attachment]) -> list[list[Attachment]]:
    """Files in order, grouped as Telegram allows albums (photo+video, documents, audio; ≤10)."""
    family = {"photo": "visual", "video": "visual", "document": "document", "audio": "audio", "voice": "voice"}
    groups: list[list[Attachment]] = []
    for att in files:
        fam = family[_file_kind(att)]
        last = groups[-1] if groups else None
        if last and fam != "voice" and family[_file_kind(last[0])] == fam and len(last) < 10:
            last.append(att)
        else:
            groups.append([att])
    return groups


class TelegramSender:
    """The sending half of a Telegram channel (`topics` is set on the staff side)."""

    def __init__(self, bot: Bot, state: StateStore, side: str, topics: TopicMap | None, max_concurrent: int,
                 reopened: Reopened | None = None) -> None:
        self.bot = bot
        self.state = state
        self.side = side
        self.topics = topics
        self.reopened = reopened
        self._slots = asyncio.Semaphore(max_concurrent)

    async def send(self, out: Outgoing) -> str:
        async with self._slots:
            return await self._send(out)

    async def _send(self, out: Outgoing) -> str:
        try:
            if out.kind == "edit":
                return await self._edit(out)
            if out.kind == "delete":
                return await self._delete(out)
            chat_id, thread = await self._target(out)
            try:
                return await self._send_new(out, chat_id, thread)
            except BadRequest as exc:
                if self.topics is None or thread is None or not topic_lost(exc) \
                        or out.conversation.startswith(UNKNOWN_TOPIC):
                    raise
            # someone deleted the conversation's topic: a new one, the message, then (through
            # the relay, journaled) the recent history for the employee
            thread = await self.topics.reopen(out, thread)
            sent = await self._send_new(out, chat_id, thread)
            if self.reopened is not None:
                try:
                    await self.reopened(out.to.user, out.conversation)
                except Exception as exc:  # the message is delivered; only the history is missing
                    log.warning("telegram: history for a reopened topic not queued: %s", type(exc).__name__)
            return sent
        except TelegramError as exc:
            raise delivery_error(exc, out.kind) from exc

    async def _target(self, out: Outgoing) -> tuple[int | str, int | None]:
        if self.topics is not None:
            return self.topics.staff_group, await self.topics.thread_for(out)
        try:
            return int(out.to.user), None
        except ValueError:
            raise Permanent(f"telegram: {out.to.user!r} is not a Telegram chat id") from None

    def _compose(self, out: Outgoing) -> str:
        lines: list[str] = []
        if self.side == "staff" and out.kind != "notice":
            if out.action not in ("", "allow"):
                lines.append(f"[{out.action}: {', '.join(out.rules)}]" if out.rules else f"[{out.action}]")
            if out.origin and out.client and out.origin.user != out.client.user:
                lines.append(f"{out.origin.display or out.origin.user}:")
        for att in out.attachments:
            if att.refused or not att.data:
                lines.append(f"[file not delivered: {att.name} ({att.refused or 'no content'})]")
        return "\n".join(lines + [out.text]) if lines and out.text else ("\n".join(lines) or out.text)

    async def _send_new(self, out: Outgoing, chat_id: int | str, thread: int | None) -> str:
        text = self._compose(out)
        files = [a for a in out.attachments if a.data and not a.refused]
        if not text.strip() and not files:
            raise Permanent(f"telegram {out.kind}: nothing to send (no text and no files)")
        reply = _split_pid(out.reply_to)[1] if out.reply_to else None
        steps: list[tuple[str, Any]] = []
        rest = text
        if files:
            caption = ""
            if text:
                caption = split_text(text, CAPTION_LIMIT)[0]
                rest = text[len(caption):].lstrip("\n ")
            for i, group in enumerate(_file_groups(files)):
                steps.append(("files", (group, caption if i == 0 else "")))
        if rest.strip() or not files:
            for part in split_text(rest, TEXT_LIMIT):
                steps.append(("text", part))
        progress_key = f"sent:{out.message_id}:{out.kind}:{out.to.user}"
        done: list[list[dict[str, str]]] = []
        if len(steps) > 1:
            done = json.loads(await self.state.get(progress_key) or "[]")
        for index, (step, arg) in enumerate(steps):
            if index < len(done):
                continue
            reply_id = reply if index == 0 else None
            if step == "text":
                done.append([{"id": await self._send_text(chat_id, arg, thread, reply_id), "t": "text"}])
            else:
                group, caption = arg
                sent = await self._send_files(chat_id, thread, group, caption, reply_id)
                done.append(
                    [{"id": pid, "t": "caption" if (j == 0 and caption) else "media"} for j, pid in enumerate(sent)]
                )
            if len(steps) > 1:
                await self.state.put(progress_key, json.dumps(done))
        parts = [p for step_parts in done for p in step_parts]
        first = parts[0]["id"]
        if len(parts) > 1 or parts[0]["t"] != "text":
            await self.state.put(f"parts:{first}", json.dumps(parts))
        return first

    async def _send_text(self, chat_id: int | str, text: str, thread: int | None, reply: int | None = None) -> str:
        """sendMessage through PTB's transport and error mapping, keeping the answer as JSON:
        relay needs only its ids, and building a full `Message` costs more than the rest of a send."""
        params: dict[str, Any] = {"chat_id": chat_id, "text": text}
        if thread is not None:
            params["message_thread_id"] = thread
        if reply is not None:
            params["reply_parameters"] = {"message_id": reply, "allow_sending_without_reply": True}
        sent = await self.bot._post("sendMessage", params)  # noqa: SLF001
        return f"{sent['chat']['id']}:{sent['message_id']}"

    async def _send_files(
        self, chat_id: int | str, thread: int | None, group: list[Attachment], caption: str, reply: int | None
    ) -> list[str]:
        cap = caption or None
        if len(group) > 1:
            kinds = {"photo": InputMediaPhoto, "video": InputMediaVideo, "audio": InputMediaAudio, "document": InputMediaDocument}
            media = [
                kinds[_file_kind(a)](media=a.data, filename=a.name, caption=cap if i == 0 else None)
                for i, a in enumerate(group)
            ]
            msgs = await self.bot.send_media_group(
                chat_id, media, message_thread_id=thread, reply_to_message_id=reply, allow_sending_without_reply=True
            )
            return [f"{m.chat_id}:{m.message_id}" for m in msgs]
        att = group[0]
        upload = InputFile(att.data, filename=att.name)
        kind = _file_kind(att)
        common: dict[str, Any] = {
            "caption": cap, "message_thread_id": thread, "reply_to_message_id": reply, "allow_sending_without_reply": True,
        }
        if kind == "photo":
            msg = await self.bot.send_photo(chat_id, upload, **common)
        elif kind == "video":
            msg = await self.bot.send_video(chat_id, upload, **common)
        elif kind == "voice":
            msg = await self.bot.send_voice(chat_id, upload, **common)
        elif kind == "audio":
            msg = await self.bot.send_audio(chat_id, upload, **common)
        else:
            msg = await self.bot.send_document(chat_id, upload, **common)
        return [f"{msg.chat_id}:{msg.message_id}"]

    async def _parts(self, pid: str) -> list[dict[str, str]]:
        stored = await self.state.get(f"parts:{pid}")
        return json.loads(stored) if stored else [{"id": pid, "t": "text"}]

    async def _edit(self, out: Outgoing) -> str:
        if not out.edits:
            raise Permanent("telegram edit: no message to edit (edits is empty)")
        parts = await self._parts(out.edits)
        editable = [p for p in parts if p["t"] in ("text", "caption")]
        text = self._compose(out)
        chunks: list[str] = []
        if editable and editable[0]["t"] == "caption":
            head = split_text(text, CAPTION_LIMIT)[0] if text else ""
            chunks.append(head)
            tail = text[len(head):].lstrip("\n ")
            chunks += split_text(tail, TEXT_LIMIT) if tail else []
        else:
            chunks = split_text(text or " ", TEXT_LIMIT)
        added: list[dict[str, str]] = []
        for i, chunk in enumerate(chunks):
            if i < len(editable):
                part = editable[i]
                chat_id, mid = _split_pid(part["id"])
                try:
                    if part["t"] == "caption":
                        await self.bot.edit_message_caption(chat_id=chat_id, message_id=mid, caption=chunk)
                    else:
                        await self.bot.edit_message_text(chunk, chat_id=chat_id, message_id=mid)
                except TelegramError as exc:
                    if not _not_modified(exc):
                        raise
            else:
                chat_id, thread = await self._target(out)
                added.append({"id": await self._send_text(chat_id, chunk, thread), "t": "text"})
        removed = editable[len(chunks):]
        for part in removed:
            chat_id, mid = _split_pid(part["id"])
            try:
                await self.bot.delete_message(chat_id, mid)
            except BadRequest:
                pass
        if added or removed:
            new_parts = [p for p in parts if p not in removed] + added
            await self.state.put(f"parts:{out.edits}", json.dumps(new_parts))
        return out.edits

    async def _delete(self, out: Outgoing) -> str:
        if not out.edits:
            raise Permanent("telegram delete: no message to delete (edits is empty)")
        for part in await self._parts(out.edits):
            chat_id, mid = _split_pid(part["id"])
            try:
                await self.bot.delete_message(chat_id, mid)
            except BadRequest as exc:
                if "not found" not in exc.message.lower():
                    raise
        return out.edits

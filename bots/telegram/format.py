"""Pure translation helpers for the Telegram channel: Bot API update JSON → parts of an
`Inbound`, and text splitting to Telegram's length limits.

Kept free of I/O so every update shape can be tested without a server, and so the channel
module only deals with transport, offsets and state.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

TEXT_LIMIT = 4096
CAPTION_LIMIT = 1024

MESSAGE_UPDATES: tuple[str, ...] = ("message", "edited_message")
"""Update keys whose payload is a `Message` relay translates as a chat message."""

_COMMON_MESSAGE_KEYS = frozenset(
    {
        "message_id", "message_thread_id", "from", "sender_chat", "sender_boost_count",
        "sender_business_bot", "date", "business_connection_id", "chat", "forward_origin",
        "is_topic_message", "is_automatic_forward", "reply_to_message", "external_reply",
        "quote", "reply_to_story", "via_bot", "edit_date", "has_protected_content",
        "is_from_offline", "media_group_id", "author_signature", "entities",
        "caption_entities", "show_caption_above_media", "has_media_spoiler", "link_preview_options",
        "effect_id", "reply_markup", "paid_star_count",
    }
)


@dataclass(frozen=True)
class FileRef:
    """A file named in a message, before it is fetched: what the size check needs."""

    file_id: str
    name: str
    mime: str
    size: int | None


def utf16_len(text: str) -> int:
    """Length as Telegram counts it (UTF-16 code units)."""
    return len(text.encode("utf-16-le")) // 2


def split_text(text: str, limit: int = TEXT_LIMIT) -> list[str]:
    """Split `text` into parts of at most `limit` UTF-16 units, preferring line then word breaks."""
    if utf16_len(text) <= limit:
        return [text]
    parts: list[str] = []
    rest = text
    while utf16_len(rest) > limit:
        cut = _fit(rest, limit)
        window = rest[:cut]
        brk = window.rfind("\n")
        if brk < cut // 2:
            brk = window.rfind(" ")
        if brk >= cut // 2 and brk > 0:
            parts.append(rest[:brk])
            rest = rest[brk + 1 :]
        else:
            parts.append(window)
            rest = rest[cut:]
    if rest:
        parts.append(rest)
    return parts


def _fit(text: str, limit: int) -> int:
    """The largest code-point prefix length of `text` that fits in `limit` UTF-16 units."""
    units = 0
    for i, ch in enumerate(text):
        units += 2 if ord(ch) > 0xFFFF else 1
        if units > limit:
            return i
    return len(text)


def display_name(user: dict[str, Any] | None) -> str:
    """A person's name as Telegram shows it: first and last name, else @username, else id."""
    if not user:
        return ""
    name = " ".join(p for p in (user.get("first_name"), user.get("last_name")) if p)
    if name:
        return name
    if user.get("title"):
        return str(user["title"])
    if user.get("username"):
        return "@" + str(user["username"])
    return str(user.get("id", ""))


def update_kind(update: dict[str, Any]) -> str:
    """The update's type key (`message`, `edited_message`, `callback_query`, …)."""
    for key in update:
        if key != "update_id":
            return key
    return "unknown"


def update_payload(update: dict[str, Any]) -> dict[str, Any]:
    value = update.get(update_kind(update))
    return value if isinstance(value, dict) else {}


def update_chat_id(update: dict[str, Any]) -> str:
    """The chat an update belongs to ('' when it has none), used to keep per-chat order."""
    payload = update_payload(update)
    chat = payload.get("chat")
    if not isinstance(chat, dict) and isinstance(payload.get("message"), dict):
        chat = payload["message"].get("chat")
    if isinstance(chat, dict) and "id" in chat:
        return str(chat["id"])
    return ""


def update_sender(update: dict[str, Any]) -> dict[str, Any] | None:
    payload = update_payload(update)
    for key in ("from", "user", "sender_chat", "chat"):
        value = payload.get(key)
        if isinstance(value, dict):
            return value
    return None


def media_group(update: dict[str, Any]) -> str | None:
    """The album id of a new (not edited) message that is part of an album."""
    msg = update.get("message")
    if isinstance(msg, dict) and msg.get("media_group_id"):
        return str(msg["media_group_id"])
    return None


def message_files(msg: dict[str, Any]) -> list[FileRef]:
    """Every file a message carries, with a usable name and MIME type."""
    refs: list[FileRef] = []
    photo = msg.get("photo")
    if isinstance(photo, list) and photo:
        best = max(photo, key=lambda p: (p.get("width", 0) * p.get("height", 0), p.get("file_size", 0)))
        refs.append(FileRef(best["file_id"], f"photo-{best.get('file_unique_id', 'x')}.jpg", "image/jpeg", best.get("file_size")))
    defaults = (
        ("animation", "animation", "mp4", "video/mp4"),
        ("document", "document", "", "application/octet-stream"),
        ("voice", "voice", "ogg", "audio/ogg"),
        ("audio", "audio", "mp3", "audio/mpeg"),
        ("video", "video", "mp4", "video/mp4"),
        ("video_note", "video_note", "mp4", "video/mp4"),
    )
    for key, stem, ext, mime in defaults:
        item = msg.get(key)
        if not isinstance(item, dict) or (key == "document" and "animation" in msg):
            continue
        unique = item.get("file_unique_id", "x")
        fallback = f"{stem}-{unique}.{ext}" if ext else f"{stem}-{unique}"
        refs.append(FileRef(item["file_id"], item.get("file_name") or fallback, item.get("mime_type") or mime, item.get("file_size")))
    sticker = msg.get("sticker")
    if isinstance(sticker, dict):
        if sticker.get("is_animated"):
            ext, mime = "tgs", "application/x-tgsticker"
        elif sticker.get("is_video"):
            ext, mime = "webm", "video/webm"
        else:
            ext, mime = "webp", "image/webp"
        refs.append(FileRef(sticker["file_id"], f"sticker-{sticker.get('file_unique_id', 'x')}.{ext}", mime, sticker.get("file_size")))
    return refs


def message_text(msg: dict[str, Any]) -> str:
    """The text a person wrote or shared: text, caption, or a location/contact in words."""
    if msg.get("text") is not None:
        return str(msg["text"])
    if msg.get("caption") is not None:
        return str(msg["caption"])
    venue = msg.get("venue")
    loc = msg.get("location")
    if isinstance(venue, dict):
        vloc = venue.get("location") or loc or {}
        where = f"{vloc.get('latitude')}, {vloc.get('longitude')}"
        return f"Venue: {venue.get('title', '')}, {venue.get('address', '')} ({where})"
    if isinstance(loc, dict):
        live = " (live)" if loc.get("live_period") else ""
        return f"Location{live}: {loc.get('latitude')}, {loc.get('longitude')}"
    contact = msg.get("contact")
    if isinstance(contact, dict):
        name = " ".join(p for p in (contact.get("first_name"), contact.get("last_name")) if p)
        text = f"Contact: {name}, {contact.get('phone_number', '')}"
        if contact.get("user_id"):
            text += f" (Telegram user {contact['user_id']})"
        return text
    return ""


def is_supported(msg: dict[str, Any]) -> bool:
    """Whether a message is content relay forwards (else it becomes an `event`)."""
    if msg.get("text") is not None or msg.get("caption") is not None:
        return True
    return bool(message_files(msg)) or any(k in msg for k in ("location", "contact", "venue"))


def content_key(msg: dict[str, Any]) -> str:
    """The first key of a message that is not common metadata: its content type."""
    for key in msg:
        if key not in _COMMON_MESSAGE_KEYS:
            return key
    return "empty"


def contact_card(msg: dict[str, Any]) -> bytes:
    contact = msg.get("contact")
    if isinstance(contact, dict) and contact.get("vcard"):
        return str(contact["vcard"]).encode()
    return b""


def raw_bytes(update: dict[str, Any]) -> bytes:
    return json.dumps(update, ensure_ascii=False, separators=(",", ":")).encode()

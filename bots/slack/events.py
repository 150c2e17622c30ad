"""Events API bodies → `Item`s: a thread reply, its edit or its deletion by an employee.

The relay's own posts (they carry `bot_id`) are echoes of what it already journaled and are
skipped; a message outside any conversation's thread is journaled as an `event`; anything
unreadable but signed is journaled whole, never dropped.
"""

from __future__ import annotations

import json
from typing import Any, Awaitable, Callable

from bots.webhooks.intake import Item, MediaRef, raw_event
from relay.model import Inbound, Party

MESSAGE_SUBTYPES = frozenset({"", "file_share", "thread_broadcast"})
UNMAPPED = "slack:outside-threads"
MAX_FILES = 10

Lookup = Callable[[str], Awaitable[str | None]]
"""thread_ts → relay conversation id (None when the thread is not a conversation's)."""


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _time(ts: str) -> float | None:
    try:
        return float(ts)
    except ValueError:
        return None


def unescape(text: str) -> str:
    """Slack's mrkdwn escapes only these three; the client gets the plain characters."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def pid(channel: str, ts: str) -> str:
    """The platform id of a Slack message: `<channel id>:<ts>` (what `send` returns too)."""
    return f"{channel}:{ts}"


def _files(files: Any) -> tuple[MediaRef, ...]:
    refs = []
    for f in (files if isinstance(files, list) else [])[:MAX_FILES]:
        d = _dict(f)
        size = d.get("size")
        refs.append(MediaRef(_str(d.get("url_private_download")) or _str(d.get("url_private")),
                             _str(d.get("mimetype")) or "application/octet-stream",
                             _str(d.get("name")) or f"{_str(d.get('id')) or 'file'}",
                             size if isinstance(size, int) and not isinstance(size, bool) else None))
    return tuple(refs)


async def parse_event(name: str, staff_channel: str, body: bytes, doc: dict[str, Any], lookup: Lookup) -> Item | None:
    """The Item of one event_callback body, or None for what is not for the relay (its echoes,
    other channels)."""
    event = _dict(doc.get("event"))
    if event.get("type") != "message":
        return Item(raw_event(name, body, f"event type {str(event.get('type'))[:40]!r}"))
    channel = _str(event.get("channel"))
    if channel != staff_channel:
        return None
    subtype = _str(event.get("subtype"))
    if subtype == "message_changed":
        msg, source = _dict(event.get("message")), _dict(event.get("message"))
    elif subtype == "message_deleted":
        msg, source = _dict(event.get("previous_message")), _dict(event.get("previous_message"))
    else:
        msg = source = event
    if source.get("bot_id") or subtype == "bot_message":
        return None
    user, ts = _str(source.get("user")), _str(source.get("ts"))
    if subtype == "message_deleted":
        ts = _str(event.get("deleted_ts")) or ts
    if not user or not ts:
        return Item(raw_event(name, body, "message event without user or ts"))
    thread = _str(msg.get("thread_ts"))
    conv = await lookup(thread) if thread and thread != ts else None
    common: dict[str, Any] = dict(channel=name, sender=Party(name, user), chat=conv or UNMAPPED, raw=body)
    if conv is None:
        return Item(Inbound(platform_id=pid(channel, ts) + (f":{subtype}" if subtype else ""), kind="event",
                            text=f"slack message outside any conversation's thread ({subtype or 'message'})",
                            sent_at=_time(ts), **common))
    if subtype == "message_changed":
        edited = _str(_dict(msg.get("edited")).get("ts")) or _str(event.get("event_ts"))
        return Item(Inbound(platform_id=f"{pid(channel, ts)}:e{edited}", kind="edit", text=unescape(_str(msg.get("text"))),
                            edits=pid(channel, ts), sent_at=_time(edited), **common))
    if subtype == "message_deleted":
        return Item(Inbound(platform_id=f"{pid(channel, ts)}:d", kind="delete", edits=pid(channel, ts),
                            sent_at=_time(_str(event.get("event_ts"))), **common))
    if subtype not in MESSAGE_SUBTYPES:
        return Item(Inbound(platform_id=f"{pid(channel, ts)}:{subtype}", kind="event",
                            text=f"slack message subtype {subtype[:40]!r}", **common))
    return Item(Inbound(platform_id=pid(channel, ts), kind="message", text=unescape(_str(msg.get("text"))),
                        sent_at=_time(ts), **common), _files(msg.get("files")))


def parse_json(body: bytes) -> dict[str, Any] | None:
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None

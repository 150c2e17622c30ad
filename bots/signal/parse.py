"""signal-cli `receive` envelopes → `Item`s, without I/O and without raising.

A data message, an edit (`editMessage`), a remote delete, a reaction and each timestamp of a
receipt become one item each; platform ids are `<author>:<sent timestamp>`, the id Signal
itself uses to point at a message. Unknown content is an `event` with the raw line kept.
"""

from __future__ import annotations

import hashlib
from typing import Any

from bots.webhooks.intake import Item, MediaRef
from relay.model import Inbound, Party

MAX_ATTACHMENTS = 32


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def pid(author: str, timestamp: int) -> str:
    return f"{author}:{timestamp}"


def _media(attachments: Any) -> tuple[MediaRef, ...]:
    refs = []
    for a in (attachments if isinstance(attachments, list) else [])[:MAX_ATTACHMENTS]:
        d = _dict(a)
        att_id = _str(d.get("id"))
        mime = _str(d.get("contentType")) or "application/octet-stream"
        refs.append(MediaRef(att_id, mime, _str(d.get("filename")) or att_id or "attachment", _int(d.get("size"))))
    return tuple(refs)


def _event(channel: str, raw: bytes, why: str, sender: Party | None = None, chat: str = "unknown") -> Item:
    digest = hashlib.sha256(raw).hexdigest()
    return Item(Inbound(channel=channel, platform_id=f"raw:{digest}", sender=sender or Party(channel, "unknown"),
                        chat=chat, kind="event", text=why[:300], raw=raw))


def parse_envelope(channel: str, account: str, envelope: Any, raw: bytes) -> list[Item]:
    env = _dict(envelope)
    source = _str(env.get("sourceNumber")) or _str(env.get("sourceUuid")) or _str(env.get("source"))
    ts = _int(env.get("timestamp"))
    if not source or ts is None:
        return [_event(channel, raw, "envelope without source or timestamp")]
    sender = Party(channel, source, _str(env.get("sourceName")))
    common: dict[str, Any] = dict(channel=channel, sender=sender, chat=source, sent_at=ts / 1000.0, raw=raw)
    if "receiptMessage" in env:
        receipt = _dict(env.get("receiptMessage"))
        text = "receipt" if receipt.get("isDelivery") else "marker:displayed" if receipt.get("isRead") \
            else "marker:viewed" if receipt.get("isViewed") else "receipt"
        stamps = [t for t in (receipt.get("timestamps") or []) if _int(t) is not None][:100]
        return [Item(Inbound(platform_id=f"{pid(source, ts)}:{text}:{t}", kind="event", text=text,
                             reply_to=pid(account, t), **common)) for t in stamps] \
            or [_event(channel, raw, "receipt without timestamps", sender, source)]
    if "editMessage" in env:
        edit = _dict(env.get("editMessage"))
        target = _int(edit.get("targetSentTimestamp"))
        data = _dict(edit.get("dataMessage"))
        if target is None:
            return [_event(channel, raw, "edit without targetSentTimestamp", sender, source)]
        return [Item(Inbound(platform_id=f"{pid(source, target)}:e{ts}", kind="edit", text=_str(data.get("message")),
                             edits=pid(source, target), **common), _media(data.get("attachments")))]
    if "dataMessage" not in env:
        kinds = [k for k in ("typingMessage", "syncMessage", "callMessage", "storyMessage") if k in env]
        return [_event(channel, raw, f"signal {kinds[0] if kinds else 'envelope'} (not a message)", sender, source)]
    data = _dict(env.get("dataMessage"))
    if data.get("groupInfo"):
        return [_event(channel, raw, "group message (the relay serves one-to-one chats)", sender, source)]
    delete = _dict(data.get("remoteDelete"))
    if delete:
        target = _int(delete.get("timestamp"))
        return [Item(Inbound(platform_id=f"{pid(source, ts)}:d", kind="delete",
                             edits=pid(source, target) if target is not None else None, **common))]
    reaction = _dict(data.get("reaction"))
    if reaction:
        author = _str(reaction.get("targetAuthorNumber")) or _str(reaction.get("targetAuthor"))
        target = _int(reaction.get("targetSentTimestamp"))
        emoji = _str(reaction.get("emoji"))
        return [Item(Inbound(platform_id=f"{pid(source, ts)}:r", kind="reaction",
                             text=f"-{emoji}" if reaction.get("isRemove") else emoji,
                             reply_to=pid(author, target) if author and target is not None else None, **common))]
    quote = _dict(data.get("quote"))
    reply_to = None
    if quote and _int(quote.get("id")) is not None:
        reply_to = pid(_str(quote.get("authorNumber")) or _str(quote.get("author")), quote["id"])
    media = _media(data.get("attachments"))
    text = _str(data.get("message"))
    if not text and not media:
        return [_event(channel, raw, "data message without text or attachments", sender, source)]
    return [Item(Inbound(platform_id=pid(source, ts), kind="message", text=text, reply_to=reply_to, **common), media)]

"""Make what a channel received valid before it reaches the journal, whatever the network.

JSON and some XML libraries hand over lone surrogates (`"\\ud800"` is valid JSON, not Unicode
text): such a string cannot be stored as UTF-8. The normalized fields are made valid here, at the
hub's door; `Inbound.raw` keeps the bytes as received, so nothing is lost from the record.
"""

from __future__ import annotations

import math
import re
from dataclasses import replace

from relay.model import Attachment, Inbound, Party

_SURROGATE = re.compile("[\ud800-\udfff]")


def valid_text(text: str) -> str:
    """Text for people: every lone surrogate becomes U+FFFD (same length, so spans stay put)."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text)
    return text


def valid_id(value: str) -> str:
    """An identifier: lone surrogates become `\\udXXX` escapes, so two distinct ids stay distinct
    (U+FFFD would merge two senders' chats into one conversation)."""
    if value.isascii():
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


def _valid_party(p: Party) -> Party:
    channel, user, display = valid_id(p.channel), valid_id(p.user), valid_text(p.display)
    if channel is p.channel and user is p.user and display is p.display:
        return p
    return Party(channel, user, display)


def _valid_attachment(a: Attachment) -> Attachment:
    fixed = (valid_text(a.name), valid_text(a.mime), valid_id(a.platform_ref), valid_text(a.refused))
    if all(new is old for new, old in zip(fixed, (a.name, a.mime, a.platform_ref, a.refused))):
        return a
    return replace(a, name=fixed[0], mime=fixed[1], platform_ref=fixed[2], refused=fixed[3])


def _valid_time(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if math.isfinite(value) else None


def _already_valid(inb: Inbound) -> bool:
    """One pass over every text field at once: the common case costs a join and a flag check."""
    s = inb.sender
    parts = [inb.text, inb.platform_id, inb.chat, s.channel, s.user, s.display, inb.reply_to or "", inb.edits or ""]
    for a in inb.attachments:
        parts += (a.name, a.mime, a.platform_ref, a.refused)
    joined = "".join(parts)
    if not joined.isascii():
        try:
            joined.encode("utf-8")
        except UnicodeEncodeError:
            return False
    return inb.sent_at is None or _valid_time(inb.sent_at) is inb.sent_at


def valid_inbound(inb: Inbound) -> Inbound:
    """`inb` itself when every field is already valid; else a copy with each field made valid."""
    if _already_valid(inb):
        return inb
    return replace(
        inb,
        sender=_valid_party(inb.sender),
        attachments=tuple(_valid_attachment(a) for a in inb.attachments),
        platform_id=valid_id(inb.platform_id),
        chat=valid_id(inb.chat),
        text=valid_text(inb.text),
        reply_to=None if inb.reply_to is None else valid_id(inb.reply_to),
        edits=None if inb.edits is None else valid_id(inb.edits),
        sent_at=None if inb.sent_at is None else _valid_time(inb.sent_at),
    )

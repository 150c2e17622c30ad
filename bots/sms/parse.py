"""Twilio webhook forms → `Item`s, without I/O and without raising.

An inbound message form carries `MessageSid`, `From`, `Body`, `NumMedia` and `MediaUrl<N>`;
a status callback carries `MessageStatus` (and `ErrorCode` on failure). A signed form the
parser cannot read still becomes an `event` with the raw body, never dropped.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Mapping

from bots.sms.optout import keyword
from bots.webhooks.intake import Item, MediaRef, raw_event
from relay.model import Inbound, Party

MAX_MEDIA = 10
"""Twilio delivers at most 10 media items with one MMS."""
NETWORK_USER = "twilio"


def media_name(sid: str, index: int, mime: str) -> str:
    ext = mimetypes.guess_extension(mime.split(";")[0].strip()) or ""
    return f"{sid}-{index}{ext}"


def _count(value: str) -> int:
    return int(value) if value.strip().isdigit() else 0


def parse_message(channel: str, form: Mapping[str, str], raw: bytes) -> Item:
    """An inbound SMS/MMS; its keyword (`stop`/`start`/`help`) is left to the channel."""
    sid, sender = form.get("MessageSid", ""), form.get("From", "")
    if not sid or not sender:
        return Item(raw_event(channel, raw, "message without MessageSid or From"))
    body = form.get("Body", "")
    media = tuple(
        MediaRef(form.get(f"MediaUrl{i}", ""), mime, media_name(sid, i, mime))
        for i in range(min(_count(form.get("NumMedia", "0")), MAX_MEDIA))
        for mime in [form.get(f"MediaContentType{i}", "") or "application/octet-stream"]
    )
    inbound = Inbound(channel=channel, platform_id=sid, sender=Party(channel, sender, form.get("ProfileName", "")),
                      chat=sender, kind="message", text=body, raw=raw)
    return Item(inbound, media)


def status_text(status: str, error_code: str, error_message: str = "") -> str:
    """The receipt text the hub links to the delivery: `status:<s>`, failures with their code.

    `undelivered` is a failure too, reported as `error:` so the hub fails the delivery.
    """
    detail = " ".join(p for p in (f"Twilio error {error_code}" if error_code else "", error_message[:200]) if p)
    if status == "failed":
        return f"status:failed: {detail}".rstrip(": ") if detail else "status:failed"
    if status == "undelivered":
        return "error: undelivered" + (f" ({detail})" if detail else "")
    return f"status:{status}"


def parse_status(channel: str, form: Mapping[str, str], raw: bytes) -> Item:
    sid, status = form.get("MessageSid", "") or form.get("SmsSid", ""), form.get("MessageStatus", "") or form.get("SmsStatus", "")
    if not sid or not status:
        return Item(raw_event(channel, raw, "status callback without MessageSid or MessageStatus"))
    code = form.get("ErrorCode", "")
    inbound = Inbound(channel=channel, platform_id=f"status:{sid}:{status}:{code}", sender=Party(channel, NETWORK_USER),
                      chat=form.get("To", "") or "unknown", kind="event",
                      text=status_text(status, code, form.get("ErrorMessage", "")), reply_to=sid, raw=raw)
    return Item(inbound)


def parse_form(channel: str, form: Mapping[str, str], raw: bytes) -> Item:
    """A message when the form has no status, else a status callback."""
    status = form.get("MessageStatus", "") or form.get("SmsStatus", "")
    if status and status != "received":
        return parse_status(channel, form, raw)
    return parse_message(channel, form, raw)


__all__ = ["keyword", "parse_form", "parse_message", "parse_status", "status_text"]

"""WeChat Official Account push XML → one `Item`, without I/O and without raising.

A body that is not a readable push (bad XML, a DTD, no sender) still becomes an `event`
carrying the raw body, so nothing WeChat signed is dropped.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from bots.webhooks.intake import Item, MediaRef, raw_event
from relay.model import Inbound, Party

VOICE_MIMES: dict[str, str] = {"amr": "audio/amr", "speex": "audio/speex", "mp3": "audio/mpeg"}
USER_EVENTS: frozenset[str] = frozenset({"subscribe", "SCAN", "CLICK"})
"""Events that open or refresh the 48-hour window, as WeChat documents them (besides messages)."""
_DTD = re.compile(rb"<!(DOCTYPE|ENTITY)", re.IGNORECASE)


class XmlError(ValueError):
    pass


def xml_fields(body: bytes) -> dict[str, str]:
    """The first-level elements of `<xml>…</xml>` as text (DTDs refused: no entity tricks)."""
    if _DTD.search(body):
        raise XmlError("document type declarations are not accepted")
    try:
        root = ET.fromstring(body)
    except (ET.ParseError, ValueError, RecursionError) as exc:
        raise XmlError(f"not XML ({exc})") from None
    if root.tag != "xml":
        raise XmlError(f"root element is <{root.tag[:40]}>, not <xml>")
    fields: dict[str, str] = {}
    for child in root:
        if isinstance(child.tag, str) and child.tag not in fields:
            fields[child.tag] = child.text or ""
    return fields


def _time(value: str) -> float | None:
    value = value.strip()
    return float(value) if value.isdigit() and len(value) <= 11 else None


def _media(kind: str, media_id: str, mime: str, ext: str) -> tuple[MediaRef, ...]:
    return (MediaRef(media_id, mime, f"{kind}-{media_id or 'unknown'}.{ext}"),)


def parse_push(channel: str, xml: bytes, raw: bytes | None = None) -> Item:
    """One push. `raw` is what gets journaled (the HTTP body; the decrypted XML in safe mode)."""
    raw = xml if raw is None else raw
    try:
        f = xml_fields(xml)
    except XmlError as exc:
        return Item(raw_event(channel, raw, str(exc), digest_of=xml))
    sender, msgtype = f.get("FromUserName", "").strip(), f.get("MsgType", "").strip()
    if not sender or not msgtype:
        return Item(raw_event(channel, raw, "push without FromUserName or MsgType", digest_of=xml))
    created = f.get("CreateTime", "").strip()
    msg_id = f.get("MsgId", "").strip()
    platform_id = msg_id or f"{sender}:{created}:{msgtype}"
    kind = "message"
    text = ""
    media: tuple[MediaRef, ...] = ()
    touches = True
    media_id = f.get("MediaId", "").strip()
    if msgtype == "text":
        text = f.get("Content", "")
    elif msgtype == "image":
        media = _media("image", media_id, "image/jpeg", "jpg")
    elif msgtype == "voice":
        fmt = f.get("Format", "amr").strip().lower() or "amr"
        media = _media("voice", media_id, VOICE_MIMES.get(fmt, "application/octet-stream"), fmt if fmt.isalnum() else "bin")
        text = f.get("Recognition", "")
    elif msgtype in ("video", "shortvideo"):
        media = _media(msgtype, media_id, "video/mp4", "mp4")
    elif msgtype == "location":
        label = f.get("Label", "")
        text = " ".join(p for p in ("[location]", label, f"({f.get('Location_X', '')}, {f.get('Location_Y', '')})") if p)
    elif msgtype == "link":
        parts = [f.get("Title", ""), f.get("Description", ""), f.get("Url", "")]
        text = "[link] " + " — ".join(p for p in parts if p)
    elif msgtype == "event":
        event = f.get("Event", "").strip()
        kind = "event"
        key = f.get("EventKey", "")
        text = f"event:{event}" + (f" {key}" if key else "")
        platform_id = f"{sender}:{created}:{event}"
        touches = event in USER_EVENTS
    else:
        kind = "event"
        text = f"unknown message type {msgtype[:60]!r}"
    inbound = Inbound(
        channel=channel,
        platform_id=platform_id,
        sender=Party(channel, sender),
        chat=sender,
        kind=kind,  # type: ignore[arg-type]
        text=text,
        sent_at=_time(created),
        raw=raw,
    )
    return Item(inbound, media, touches_window=touches)


def encrypt_field(body: bytes) -> str | None:
    """The `Encrypt` element of a safe-mode envelope, or None when the body has none."""
    try:
        value = xml_fields(body).get("Encrypt")
    except XmlError:
        return None
    return value.strip() if value else None

"""WhatsApp Cloud API webhook bodies → `Item`s, without I/O and without raising.

Anything the parser cannot read (bad JSON, an unknown webhook field, a message without an id)
still becomes an `event` carrying the raw body, so nothing signed by Meta is dropped.
"""

from __future__ import annotations

import hashlib
import json
import mimetypes
from dataclasses import replace
from typing import Any

from bots.webhooks.intake import Item, MediaRef, raw_event
from relay.model import Inbound, Party

MEDIA_TYPES: tuple[str, ...] = ("image", "video", "audio", "document", "sticker")
CAPTIONED: frozenset[str] = frozenset({"image", "video", "document"})
NETWORK_USER = "whatsapp"


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _time(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
    else:
        return None
    return number if 0 <= number < 1e11 else None


def parse_size(value: Any) -> int | None:
    """`file_size` as Meta sends it: a number or a decimal string (None when unusable)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, float) and value.is_integer():
        return int(value) if value >= 0 else None
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _odd(channel: str, body: bytes, path: str, why: str) -> Item:
    digest = hashlib.sha256(body).hexdigest()
    inbound = Inbound(
        channel=channel,
        platform_id=f"raw:{digest}:{path}",
        sender=Party(channel, "unknown"),
        chat="unknown",
        kind="event",
        text=f"unreadable webhook item at {path}: {why}"[:500],
        raw=body,
    )
    return Item(inbound)


def media_name(kind: str, media_id: str, mime: str, filename: str = "") -> str:
    if filename:
        return filename
    ext = mimetypes.guess_extension(mime.split(";")[0].strip()) or ""
    return f"{kind}-{media_id or 'unknown'}{ext}"


def _error_text(errors: Any) -> str:
    first = _dict(_list(errors)[0]) if _list(errors) else {}
    code = first.get("code")
    title = _str(first.get("title")) or _str(first.get("message"))
    if code is None and not title:
        return ""
    return f"{code} {title}".strip() if code is not None else title


def _location_text(loc: dict[str, Any]) -> str:
    where = ", ".join(p for p in (_str(loc.get("name")), _str(loc.get("address"))) if p)
    lat, lon = loc.get("latitude"), loc.get("longitude")
    coords = f"({lat}, {lon})" if lat is not None or lon is not None else ""
    parts = [p for p in ("[location]", where, coords, _str(loc.get("url"))) if p]
    return " ".join(parts)


def _leaves(value: Any, path: str = "") -> list[tuple[str, str]]:
    """Every string or number in a JSON value with its dotted path (list indexes left out)."""
    if isinstance(value, dict):
        return [leaf for k, v in value.items() for leaf in _leaves(v, f"{path}.{k}" if path else str(k))]
    if isinstance(value, list):
        return [leaf for v in value for leaf in _leaves(v, path)]
    if isinstance(value, bool) or value is None:
        return []
    if isinstance(value, (str, int, float)) and str(value).strip():
        return [(path, str(value))]
    return []


def _contacts_text(contacts: list[Any]) -> str:
    """One line per card with all of its text (names, phones, emails, addresses, org, urls,
    birthday and anything Meta adds), so the policy sees everything the client shared."""
    lines = []
    for contact in contacts:
        card = _dict(contact)
        name = _str(_dict(card.get("name")).get("formatted_name")).strip() or "(no name)"
        rest = [f"{path}: {value}" for path, value in _leaves(card) if path != "name.formatted_name"]
        lines.append(f"[contact] {name}" + (f"; {'; '.join(rest)}" if rest else ""))
    return "\n".join(lines) or "[contact]"


def _interactive_text(inter: dict[str, Any]) -> str:
    sub = _str(inter.get("type"))
    reply = _dict(inter.get(sub))
    if sub in ("button_reply", "list_reply"):
        parts = [_str(reply.get("title")), _str(reply.get("description"))]
        return " — ".join(p for p in parts if p)
    if sub == "nfm_reply":
        return _str(reply.get("body")) or _str(reply.get("response_json"))
    return f"[interactive {sub}]" if sub else "[interactive]"


def _message(channel: str, body: bytes, msg: Any, names: dict[str, str], path: str) -> Item:
    m = _dict(msg)
    wamid, wa_id = _str(m.get("id")), _str(m.get("from"))
    if not wamid or not wa_id:
        return _odd(channel, body, path, "message without id or from")
    mtype = _str(m.get("type"))
    sender = Party(channel, wa_id, names.get(wa_id, ""))
    context = _dict(m.get("context"))
    fields: dict[str, Any] = {"reply_to": _str(context.get("id")) or None}
    media: tuple[MediaRef, ...] = ()
    kind = "message"
    text = ""
    if mtype == "text":
        text = _str(_dict(m.get("text")).get("body"))
    elif mtype in MEDIA_TYPES:
        obj = _dict(m.get(mtype))
        media_id, mime = _str(obj.get("id")), _str(obj.get("mime_type")) or "application/octet-stream"
        if mtype in CAPTIONED:
            text = _str(obj.get("caption"))
        media = (MediaRef(media_id, mime, media_name(mtype, media_id, mime, _str(obj.get("filename"))),
                          declared_sha256=_str(obj.get("sha256"))),)
    elif mtype == "location":
        text = _location_text(_dict(m.get("location")))
    elif mtype == "contacts":
        text = _contacts_text(_list(m.get("contacts")))
    elif mtype == "interactive":
        text = _interactive_text(_dict(m.get("interactive")))
    elif mtype == "button":
        text = _str(_dict(m.get("button")).get("text")) or _str(_dict(m.get("button")).get("payload"))
    elif mtype == "reaction":
        reaction = _dict(m.get("reaction"))
        kind = "reaction"
        text = _str(reaction.get("emoji"))
        fields["reply_to"] = _str(reaction.get("message_id")) or None
    elif mtype == "unsupported":
        kind = "event"
        detail = _error_text(m.get("errors"))
        subtype = _str(_dict(m.get("unsupported")).get("type"))
        text = "unsupported" + (f":{subtype}" if subtype else "") + (f" {detail}" if detail else "")
        fields["notice"] = unsupported_notice(text)
    else:
        kind = "event"
        text = f"unknown message type {mtype!r}"[:200]
        fields["notice"] = unsupported_notice(text)
    inbound = Inbound(
        channel=channel,
        platform_id=wamid,
        sender=sender,
        chat=wa_id,
        kind=kind,  # type: ignore[arg-type]
        text=text,
        sent_at=_time(m.get("timestamp")),
        raw=body,
        **fields,
    )
    return Item(inbound, media, touches_window=True)


def unsupported_notice(what: str) -> str:
    """What the employee is told when the client sent something WhatsApp does not pass on."""
    return (f"The client sent a WhatsApp message that cannot be shown here ({what[:200]}), e.g. an edit "
            "or a type WhatsApp does not give to businesses. Ask them to send it again.")


def _status(channel: str, body: bytes, st: Any, path: str) -> Item:
    s = _dict(st)
    wamid, status = _str(s.get("id")), _str(s.get("status"))
    if not wamid or not status:
        return _odd(channel, body, path, "status without id or status")
    recipient = _str(s.get("recipient_id")) or "unknown"
    timestamp = s.get("timestamp")
    text = f"status:{status}"
    detail = _error_text(s.get("errors"))
    if detail:
        text += f":{detail}"
    inbound = Inbound(
        channel=channel,
        platform_id=f"status:{wamid}:{status}:{timestamp if isinstance(timestamp, (str, int)) else ''}",
        sender=Party(channel, NETWORK_USER),
        chat=recipient,
        kind="event",
        text=text,
        reply_to=wamid,
        sent_at=_time(timestamp),
        raw=body,
    )
    return Item(inbound)


def parse_webhook(channel: str, body: bytes) -> list[Item]:
    """Every item of one POST body, in order; never raises, never returns an empty list."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError) as exc:
        return [Item(raw_event(channel, body, f"not JSON ({type(exc).__name__})"))]
    if not isinstance(doc, dict) or doc.get("object") != "whatsapp_business_account":
        return [Item(raw_event(channel, body, "not a whatsapp_business_account notification"))]
    items: list[Item] = []
    for ei, entry in enumerate(_list(doc.get("entry"))):
        changes = _dict(entry).get("changes")
        if not isinstance(changes, list):
            items.append(_odd(channel, body, f"entry[{ei}]", "entry without changes"))
            continue
        for ci, change in enumerate(changes):
            path = f"entry[{ei}].changes[{ci}]"
            value = _dict(change).get("value")
            field = _dict(change).get("field")
            if field != "messages" or not isinstance(value, dict):
                items.append(_odd(channel, body, path, f"webhook field {str(field)[:60]!r}"))
                continue
            names = {
                _str(_dict(c).get("wa_id")): _str(_dict(_dict(c).get("profile")).get("name"))
                for c in _list(value.get("contacts"))
            }
            account = _str(_dict(value.get("metadata")).get("phone_number_id")).strip()
            found: list[Item] = []
            for mi, msg in enumerate(_list(value.get("messages"))):
                found.append(_message(channel, body, msg, names, f"{path}.messages[{mi}]"))
            for si, st in enumerate(_list(value.get("statuses"))):
                found.append(_status(channel, body, st, f"{path}.statuses[{si}]"))
            if not found:
                found.append(_odd(channel, body, path, "messages change without messages or statuses"))
            items += [replace(item, account=account) for item in found] if account else found
    if not items:
        items.append(Item(raw_event(channel, body, "notification without entries")))
    return items

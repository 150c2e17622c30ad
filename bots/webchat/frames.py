"""The JSON frames of the web chat and desk WebSockets: parsing what browsers send, building pushes.

Kept apart from the channels so the wire protocol (documented in the README for outside
integrators) lives in one place.
"""

from __future__ import annotations

import json
import re
from typing import Any, Sequence

from relay.model import ConversationItem, HistoryItem, Outgoing, Party

MAX_TEXT = 64 * 1024
MAX_ID = 128
MAX_ATTACHMENTS = 20
_VISITOR = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")

Frame = dict[str, Any]


class FrameError(ValueError):
    """A frame the server cannot accept; answered with an error frame, the socket stays open."""

    def __init__(self, message: str, frame_id: str | None = None) -> None:
        super().__init__(message)
        self.frame_id = frame_id


def valid_visitor(visitor: str) -> bool:
    """Visitor ids are opaque tokens made by the page; no ':' so platform ids stay unambiguous."""
    return bool(_VISITOR.match(visitor))


def parse(data: str, allowed: tuple[str, ...]) -> Frame:
    """A JSON object with a known `type` and a usable `id`, or FrameError saying what is wrong."""
    try:
        frame = json.loads(data)
    except ValueError as exc:
        raise FrameError(f"not JSON: {exc}") from None
    except RecursionError:
        raise FrameError("not a frame: JSON nested too deeply; a frame is one flat JSON object") from None
    if not isinstance(frame, dict):
        raise FrameError("a frame must be a JSON object")
    raw_id = frame.get("id")
    frame_id = raw_id if isinstance(raw_id, str) else None
    kind = frame.get("type")
    if kind not in allowed:
        raise FrameError(f"unknown frame type {kind!r}; expected one of {', '.join(allowed)}", frame_id)
    frame["id"] = text_field(frame, "id", MAX_ID, frame_id, required=True)
    return frame


def text_field(frame: Frame, key: str, limit: int, frame_id: str | None, *, required: bool = False) -> str:
    value = frame.get(key, None)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise FrameError(f"`{key}` must be a {'non-empty ' if required else ''}string", frame_id)
    if len(value) > limit:
        raise FrameError(f"`{key}` is longer than {limit} characters", frame_id)
    return value


def int_field(frame: Frame, key: str, low: int, high: int, frame_id: str) -> int | None:
    """An optional whole number within [low, high]; None when absent."""
    value = frame.get(key, None)
    if value is None:
        return None
    if type(value) is not int or not low <= value <= high:
        raise FrameError(f"`{key}` must be a whole number from {low} to {high}", frame_id)
    return value


def upload_ids(frame: Frame) -> list[str]:
    value = frame.get("attachments", [])
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise FrameError("`attachments` must be a list of upload ids", frame["id"])
    if len(value) > MAX_ATTACHMENTS:
        raise FrameError(f"at most {MAX_ATTACHMENTS} attachments per message", frame["id"])
    return value


def encode(frame: Frame) -> str:
    text = json.dumps(frame, ensure_ascii=False, separators=(",", ":"))
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate a sender put in an id: echoed as its JSON escape
            return json.dumps(frame, separators=(",", ":"))
    return text


def error(message: str, frame_id: str | None = None, *, retry: bool = False) -> Frame:
    """An error frame; `retry` says whether sending the same frame again can succeed (the page
    offers "click to retry" only then), false for a frame the server will always refuse."""
    frame: Frame = {"type": "error", "error": message, "retry": retry}
    if frame_id is not None:
        frame["id"] = frame_id
    return frame


def attachment_list(out: Outgoing, urls: Sequence[str | None]) -> list[Frame]:
    """`urls[i]` is where the recipient fetches `out.attachments[i]` (None: no bytes to serve)."""
    return [
        {"name": att.name, "mime": att.mime, "size": att.size, "url": url}
        for att, url in zip(out.attachments, urls)
    ]


def _party(party: Party | None) -> Frame | None:
    return None if party is None else {"name": party.display or party.user, "channel": party.channel}


def own_frame_id(platform_id: str | None, key: str) -> str | None:
    """The frame id a page gave its message, from the platform id the channel made of it (`key:id`)."""
    if platform_id and platform_id.startswith(key + ":"):
        return platform_id[len(key) + 1:]
    return None


def _notice(out: Outgoing, frame: Frame) -> Frame:
    """A notice about one of the recipient's own messages names it (`answers`) and what it says (`about`)."""
    answers = own_frame_id(out.reply_to, out.to.user)
    if answers is not None:
        frame["answers"] = answers
    if out.about:
        frame["about"] = out.about
    return frame


def client_push(out: Outgoing, urls: Sequence[str | None] = ()) -> Frame:
    """What a visitor's page receives for one Outgoing."""
    if out.kind == "edit":
        return {"type": "edit", "id": out.edits or out.message_id, "text": out.text}
    if out.kind == "delete":
        return {"type": "delete", "id": out.edits or out.message_id}
    if out.kind == "notice":
        return _notice(out, {"type": "notice", "id": out.message_id, "text": out.text})
    return {
        "type": "message",
        "id": out.message_id,
        "text": out.text,
        "from": out.origin.display if out.origin is not None else "",
        "attachments": attachment_list(out, urls),
    }


def desk_push(out: Outgoing, urls: Sequence[str | None] = ()) -> Frame:
    """What an employee's desk receives for one Outgoing (conversation, author, verdict)."""
    if out.kind == "edit":
        return {"type": "edit", "conversation": out.conversation, "id": out.edits or out.message_id,
                "text": out.text}
    if out.kind == "delete":
        return {"type": "delete", "conversation": out.conversation, "id": out.edits or out.message_id}
    if out.kind == "notice":
        frame = _notice(out, {"type": "notice", "conversation": out.conversation, "id": out.message_id,
                              "text": out.text})
        if out.handed_from is not None:  # the desk shows the history itself: this is its marker
            frame["from"] = _party(out.handed_from)
        return frame
    return {
        "type": "message",
        "conversation": out.conversation,
        "id": out.message_id,
        "text": out.text,
        "from": _party(out.origin),
        "client": _party(out.client),
        "verdict": {"action": out.action, "rules": list(out.rules)},
        "attachments": attachment_list(out, urls),
    }


def conversation_entry(item: ConversationItem) -> Frame:
    """One assigned conversation in a `conversations` answer."""
    entry: Frame = {"conversation": item.id, "client": _party(item.client), "last": item.last_seq}
    if item.withheld:  # not even the user id in place of the name (a web visitor's id is their key)
        entry["client"] = {"name": "", "channel": item.client.channel}
        entry["withheld"] = item.withheld
    return entry


def history_entry(item: HistoryItem, employee: str, urls: Sequence[str | None]) -> Frame:
    """One message of a `history` answer, keyed as the desk keys it live: the desk's own frame id
    for the employee's replies (so they can still be edited), the relay's id for the rest."""
    own = own_frame_id(item.platform_id, employee) if item.mine else None
    entry: Frame = {
        "id": own or item.id,
        "message": item.id,
        "seq": item.seq,
        "ts": item.ts,
        "who": "me" if item.mine else "them" if item.direction == "inbound" else "staff",
        "from": {"name": "" if item.withheld and item.direction == "inbound" else item.sender.display or item.sender.user,
                 "channel": item.sender.channel},
        "text": item.text,
        "verdict": {"action": item.action or "allow", "rules": list(item.rules)},
        "state": item.state,
        "attachments": [{"name": a.name, "mime": a.mime, "size": a.size, "url": url}
                        for a, url in zip(item.attachments, urls)],
    }
    if item.edited:
        entry["edited"] = True
    if item.deleted:
        entry["deleted"] = True
    if item.withheld:
        entry["withheld"] = item.withheld
    return entry

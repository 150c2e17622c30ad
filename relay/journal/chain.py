"""The hash chain: canonical JSON of an event and its link hash, one definition for writer and verifier."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

GENESIS = "0" * 64
"""prev_hash of seq 1."""

_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_MAKE_ENCODER = getattr(json.encoder, "c_make_encoder", None)
_LOCAL = threading.local()


def _c_encoder() -> Any:
    """The C encoder `_ENCODER.encode` builds on every call, built once per thread (its markers
    dict, the circular-reference check, must not be shared by two threads encoding at once)."""
    markers: dict[int, Any] = {}
    encode = _MAKE_ENCODER(
        markers, _ENCODER.default, json.encoder.encode_basestring, None, ":", ",", True, False, False
    )
    _LOCAL.encoder = encoder = (encode, markers)
    return encoder


def canonical_json(obj: Any) -> str:
    """Sorted keys, no spaces, UTF-8 kept: the same bytes for the same value, always.

    Exactly `_ENCODER.encode(obj)` (tests/test_journal_chain.py checks), minus its per-call set-up.
    """
    if _MAKE_ENCODER is None:
        return _ENCODER.encode(obj)
    try:
        encode, markers = _LOCAL.encoder
    except AttributeError:
        encode, markers = _c_encoder()
    try:
        return "".join(encode(obj, 0))
    except BaseException:
        markers.clear()
        raise


def event_hash(prev_hash: str, canonical: bytes, key: bytes | None) -> str:
    """`sha256(prev_hash || canonical)` or, with a key, HMAC-SHA256 of the same bytes."""
    data = prev_hash.encode("ascii") + canonical
    if key is None:
        return hashlib.sha256(data).hexdigest()
    return hmac.digest(key, data, "sha256").hex()


def event_canonical(seq: int, ts: float, kind: str, conversation: str | None, body: Any) -> bytes:
    """The documented form: canonical_json({seq, ts, kind, conversation, body})."""
    return canonical_json(
        {"seq": seq, "ts": ts, "kind": kind, "conversation": conversation, "body": body}
    ).encode()


def fast_canonical(seq: int, ts: float, kind_json: str, conversation_json: str, body_json: str) -> bytes:
    """Same bytes as `event_canonical` from pre-encoded parts (keys already in sorted order)."""
    return (
        f'{{"body":{body_json},"conversation":{conversation_json},"kind":{kind_json},'
        f'"seq":{seq},"ts":{float.__repr__(ts)}}}'
    ).encode()


canonical_str: Callable[[str], str] = json.encoder.encode_basestring
"""`canonical_json` of a str (what `JSONEncoder.encode` does for one), without the encoder."""


def canonical_parts(ts: float, kind_json: str, conversation_json: str, body_json: str) -> tuple[str, str]:
    """`event_canonical` split around seq, the one part only the writer knows: the caller encodes
    these, the writer hashes `link_bytes(prev_hash, head, seq, tail)`."""
    return (
        f'{{"body":{body_json},"conversation":{conversation_json},"kind":{kind_json},"seq":',
        f',"ts":{float.__repr__(ts)}}}',
    )


def link_bytes(prev_hash: str, head: str, seq: int, tail: str) -> bytes:
    """What `event_hash` hashes (prev_hash || canonical), from `canonical_parts`."""
    return f"{prev_hash}{head}{seq}{tail}".encode()


@dataclass(frozen=True, slots=True)
class Event:
    """One committed journal entry. `body` is the value appended (stored as canonical JSON)."""

    seq: int
    ts: float
    kind: str
    conversation: str | None
    body: dict[str, Any]
    prev_hash: str
    hash: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "ts": self.ts,
            "kind": self.kind,
            "conversation": self.conversation,
            "body": self.body,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


_NEW_EVENT = Event.__new__
_SET_FIELDS = tuple(Event.__dict__[f].__set__ for f in Event.__slots__)


def make_event(
    seq: int, ts: float, kind: str, conversation: str | None, body: dict[str, Any], prev_hash: str, hash: str
) -> Event:
    """`Event(...)` at half the cost, for the writer's loop: the frozen dataclass `__init__` sets
    each field through `object.__setattr__`; this sets the slots directly."""
    ev = _NEW_EVENT(Event)
    s_seq, s_ts, s_kind, s_conversation, s_body, s_prev, s_hash = _SET_FIELDS
    s_seq(ev, seq)
    s_ts(ev, ts)
    s_kind(ev, kind)
    s_conversation(ev, conversation)
    s_body(ev, body)
    s_prev(ev, prev_hash)
    s_hash(ev, hash)
    return ev

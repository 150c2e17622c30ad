"""The writer's pre-encoded fast path produces exactly the documented canonical bytes."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from relay.journal.chain import Event, canonical_json, canonical_parts, canonical_str, event_canonical, fast_canonical, link_bytes, make_event

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(
    seq=st.integers(min_value=1, max_value=2**53),
    ts=st.floats(min_value=0, max_value=4e9, allow_nan=False),
    kind=st.text(min_size=1),
    conversation=st.none() | st.text(),
    body=st.dictionaries(st.text(), json_values, max_size=6),
)
def test_fast_canonical_equals_documented_form(seq: int, ts: float, kind: str, conversation: str | None, body: dict[str, Any]) -> None:
    documented = json.dumps(
        {"seq": seq, "ts": ts, "kind": kind, "conversation": conversation, "body": body},
        sort_keys=True, separators=(",", ":"), ensure_ascii=False,
    ).encode()
    assert event_canonical(seq, ts, kind, conversation, body) == documented
    conv_json = "null" if conversation is None else canonical_json(conversation)
    assert fast_canonical(seq, ts, canonical_json(kind), conv_json, canonical_json(body)) == documented


@settings(max_examples=200, deadline=None)
@given(
    seq=st.integers(min_value=1, max_value=2**53),
    ts=st.floats(min_value=0, max_value=4e9, allow_nan=False),
    kind=st.text(min_size=1),
    conversation=st.none() | st.text(),
    body=st.dictionaries(st.text(), json_values, max_size=6),
    prev=st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
)
def test_link_bytes_equal_prev_hash_and_documented_form(
    seq: int, ts: float, kind: str, conversation: str | None, body: dict[str, Any], prev: str
) -> None:
    conv_json = "null" if conversation is None else canonical_json(conversation)
    head, tail = canonical_parts(ts, canonical_json(kind), conv_json, canonical_json(body))
    assert link_bytes(prev, head, seq, tail) == prev.encode("ascii") + event_canonical(seq, ts, kind, conversation, body)


@settings(max_examples=300, deadline=None)
@given(value=json_values)
def test_canonical_json_equals_json_dumps(value: Any) -> None:
    assert canonical_json(value) == json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def test_canonical_json_errors_like_json_dumps_and_recovers() -> None:
    loop: list[Any] = [1]
    loop.append(loop)
    for bad in (loop, {"x": float("nan")}, {"x": object()}, {1: 1, "a": 2}):
        try:
            want: Any = json.dumps(bad, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        except (ValueError, TypeError) as exc:
            want = type(exc)
        try:
            got: Any = canonical_json(bad)
        except (ValueError, TypeError) as exc:
            got = type(exc)
        assert got == want, bad
    shared = {"a": [1, 2]}
    assert canonical_json([shared, shared]) == '[{"a":[1,2]},{"a":[1,2]}]'



@settings(max_examples=300, deadline=None)
@given(text=st.text())
def test_canonical_str_equals_canonical_json(text: str) -> None:
    assert canonical_str(text) == canonical_json(text) == json.dumps(text, ensure_ascii=False)


def test_make_event_equals_event() -> None:
    assert Event.__slots__ == ("seq", "ts", "kind", "conversation", "body", "prev_hash", "hash")
    args = (7, 1.5, "message.received", "c-1", {"a": [1]}, "0" * 64, "f" * 64)
    made, built = make_event(*args), Event(*args)
    assert made == built and repr(made) == repr(built)
    assert made.to_dict() == built.to_dict()
    try:
        made.seq = 8  # type: ignore[misc]
    except AttributeError:
        pass
    else:
        raise AssertionError("a made Event must stay frozen")

"""The writer's pre-encoded fast path produces exactly the documented canonical bytes."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from relay.journal.chain import canonical_json, event_canonical, fast_canonical

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

"""The direct EML writer gives exactly the bytes of the email package's rendering it replaces."""

from __future__ import annotations

import string

import pytest

from hypothesis import given, settings
from hypothesis import strategies as st

from relay.evidence.collect import MessageRecord
from relay.evidence.eml import POLICY, header_line, render_eml, render_with_email

TEXTS = ["", "hello", "  spaced   out  ", "line one\nline two\r\nthree\rfour", "trailing newline\n", "\n\n",
         "Grüße, 谢谢, こんにちは 🎉", "=?utf-8?q?looks_encoded?=", "x" * 997, "y" * 998, "z" * 999, "é" * 600,
         "tab\there", "form\x0cfeed and \x1c separators", "\x00 nul", "long " * 40, "(comment) <angle> \"quoted\" a@b"]
PARTIES = [{"channel": "webchat", "user": "visitor-1", "display": "Visitor One"},
           {"channel": "telegram", "user": "42", "display": "Jöhn \"JJ\" Doe, Jr."},
           {"channel": "whats app", "user": "+49 170 1234", "display": ""},
           {}, {"channel": "x", "user": "u", "display": "李小龍"}]


def record(text: str, sender: dict, **extra: object) -> MessageRecord:
    body = {"id": "m-abc123", "direction": "inbound", "channel": "webchat", "kind": "message", "text": text,
            "sender": sender, "client": sender, "employee": "alice", "sent_at": 1.7e9, "raw_sha256": "ab" * 32,
            "attachments": []}
    body.update(extra.pop("body", {}))  # type: ignore[arg-type]
    return MessageRecord(str(body["id"]), 42, 1.7e9 + 1, "c-1", body, **extra)  # type: ignore[arg-type]


def test_direct_rendering_equals_the_email_package() -> None:
    verdict = {"action": "redact", "rules": [{"rule": "PII-001"}, {"rule": "MNPI-002"}], "policy_version": "cd" * 32}
    cases = [record(t, p) for t in TEXTS for p in PARTIES]
    cases += [
        record("edited", PARTIES[0], body={"kind": "edit", "edits": "m-old"}, verdict=verdict),
        record("", PARTIES[1], body={"kind": "delete", "edits": "m-old", "direction": "outbound"}),
        record("reply", PARTIES[0], body={"reply_to": "m-first", "sent_at": None},
               decisions=[(1.7e9, {"decision": "release", "reviewer": "carol"})]),
        record("gone", PARTIES[0], erased={"ts": 1.7e9 + 5, "reason": "retention 7y"}, restricted=True),
        record("odd id", PARTIES[0], body={"id": "seq-7 (weird)"}),
    ]
    for m in cases:
        assert render_eml(m, {}) == render_with_email(m, {}), (m.text, m.sender)
    broken = record("a reason", PARTIES[0], erased={"ts": 1.7e9, "reason": "line\nbreak"})
    for render in (render_eml, render_with_email):  # a header with a line break is refused by both
        with pytest.raises(ValueError, match="linefeed"):
            render(broken, {})


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=300),
       st.text(alphabet=string.printable, max_size=120))
def test_direct_rendering_equals_the_email_package_for_any_text(text: str, display: str) -> None:
    try:
        m = record(text, {"channel": "webchat", "user": "v", "display": display})
        expected = render_with_email(m, {})
    except ValueError:  # the email package refuses it (a line break in a header): so must the direct path
        with pytest.raises(ValueError):
            render_eml(record(text, {"channel": "webchat", "user": "v", "display": display}), {})
        return
    assert render_eml(m, {}) == expected


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["Subject", "X-Relay-Rules", "In-Reply-To", "Message-ID", "Date", "From"]),
       st.text(alphabet=string.printable.replace("\n", "").replace("\r", "").replace("\x0b", "").replace("\x0c", ""),
               max_size=1100))
def test_each_header_line_equals_the_email_package(name: str, value: str) -> None:
    try:
        expected = POLICY.fold_binary(*POLICY.header_store_parse(name, value))
    except Exception as exc:  # the email package refuses it: so must the direct path
        try:
            header_line(name, value)
        except type(exc):
            return
        raise AssertionError(f"accepted what the email package refuses: {value!r}") from None
    assert header_line(name, value) == expected


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=0, max_value=4e9))
def test_date_header_line_equals_the_email_package(ts: float) -> None:
    from datetime import datetime, timezone
    from email.utils import format_datetime

    value = format_datetime(datetime.fromtimestamp(ts, timezone.utc))
    assert header_line("Date", value) == POLICY.fold_binary(*POLICY.header_store_parse("Date", value))


WORDS = st.one_of(st.sampled_from(["bond", "[inbound", "message]", "a", "株価", "債券", "取引", "é", "Grüße", "🎉", "x-y", "(c)"]),
                  st.text(alphabet=st.characters(min_codepoint=0xa0, max_codepoint=0x2fff, exclude_categories=("Cs", "Zl", "Zp")),
                          min_size=1, max_size=8))


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(["Subject", "X-Relay-Client", "References"]), st.lists(WORDS, min_size=1, max_size=20),
       st.sampled_from([" ", "  ", "\t"]))
def test_mixed_script_header_line_equals_the_email_package(name: str, words: list[str], sep: str) -> None:
    value = (" " if sep != " " and len(words) > 3 else " ").join(words[:3]) + sep + " ".join(words[3:])
    try:
        expected = POLICY.fold_binary(*POLICY.header_store_parse(name, value.strip()))
    except ValueError:
        return
    assert header_line(name, value.strip()) == expected

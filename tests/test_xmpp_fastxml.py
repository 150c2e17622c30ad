"""bots.xmpp.fastxml: the fast escape gives slixmpp's exact output; stanzas serialise the same."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from slixmpp import Message

from bots.xmpp import fastxml


@given(st.text())
def test_escape_matches_slixmpp(text: str) -> None:
    assert fastxml.escape(text) == fastxml._ORIGINAL_ESCAPE(text)
    assert fastxml.escape(text, True) == fastxml._ORIGINAL_ESCAPE(text, True)


def test_installed_escape_serialises_stanzas_as_before() -> None:
    fastxml.install()
    msg = Message()
    msg["to"] = "alice@example.org"
    msg["body"] = "5 < 6 & \"quotes\" 'single' > done"
    msg["id"] = "a&b"
    text = str(msg)
    assert "<body>5 &lt; 6 &amp; &quot;quotes&quot; &apos;single&apos; &gt; done</body>" in text
    assert 'id="a&amp;b"' in text
    from slixmpp.xmlstream import tostring as tostring_fn
    original = fastxml._tostring.escape
    try:
        fastxml._tostring.escape = fastxml._ORIGINAL_ESCAPE
        assert tostring_fn(msg.xml) == text
    finally:
        fastxml._tostring.escape = original

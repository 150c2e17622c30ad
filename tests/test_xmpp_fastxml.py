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


CRITERIA = [
    "{jabber:client}message", "{jabber:client}message/{jabber:client}body",
    "{jabber:client}message/{jabber:client}error", "{jabber:client}presence", "{jabber:component:accept}message",
    "{http://etherx.jabber.org/streams}error", "{urn:xmpp:sm:3}r", "{urn:xmpp:sm:3}a",
    "{jabber:client}message/{urn:xmpp:receipts}received", "{jabber:client}iq/{urn:xmpp:ping}ping",
    "{jabber:client}message/{http://jabber.org/protocol/chatstates}active",
    "{jabber:client}message/{urn:xmpp:message-retract:1}retract/{urn:xmpp:fallback:0}body",
    "{jabber:client}message/*",
    "message", "{jabber:client}message/{jabber:client}thread",
]
STANZAS = [
    "<message xmlns='jabber:client' type='chat'><body>hi</body></message>",
    "<message xmlns='jabber:client'><received xmlns='urn:xmpp:receipts' id='x'/></message>",
    "<message xmlns='jabber:client' type='error'><error type='cancel'/></message>",
    "<message xmlns='jabber:client'><active xmlns='http://jabber.org/protocol/chatstates'/></message>",
    "<message xmlns='jabber:client'><retract xmlns='urn:xmpp:message-retract:1' id='1'>"
    "<body xmlns='urn:xmpp:fallback:0'/></retract></message>",
    "<message xmlns='jabber:client'><body xml:lang='en'>a</body><body>b</body></message>",
    "<presence xmlns='jabber:client'/>",
    "<iq xmlns='jabber:client' type='get'><ping xmlns='urn:xmpp:ping'/></iq>",
    "<r xmlns='urn:xmpp:sm:3'/>", "<a xmlns='urn:xmpp:sm:3' h='3'/>",
    "<message xmlns='jabber:component:accept'><body>x</body></message>",
    "<error xmlns='http://etherx.jabber.org/streams'><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></error>",
]


def test_fast_matcher_agrees_with_elementpath() -> None:
    import xml.etree.ElementTree as ET

    from slixmpp.xmlstream import StanzaBase
    from slixmpp.xmlstream.matcher import MatchXPath

    fastxml.install()
    for raw in STANZAS:
        stanza = StanzaBase(xml=ET.fromstring(raw))
        for criteria in CRITERIA:
            matcher = MatchXPath(criteria)
            assert fastxml.match_xpath(matcher, stanza) == fastxml._ORIGINAL_MATCH(matcher, stanza), (raw, criteria)
    assert fastxml._plain_steps("{jabber:client}message/{jabber:client}body") == (
        "{jabber:client}message", "{jabber:client}body")
    assert fastxml._plain_steps("{jabber:client}message/*") is None


def test_serialize_writes_what_slixmpp_writes() -> None:
    import xml.etree.ElementTree as ET

    from slixmpp.xmlstream import tostring

    from bots.xmpp.stanzas import NS_NICK, NS_RECEIPTS, NS_REPLY, NS_SID, el, oob

    ns = "jabber:component:accept"
    root = ET.Element(f"{{{ns}}}message", {"type": "chat", "to": "a@b.example", "from": "c-1@clients.example",
                                           "id": "relay-m-1&\"2\""})
    ET.SubElement(root, f"{{{ns}}}body").text = "5 < 6 & 'seven' > \"eight\" – Zoé 🙂"
    root.extend([el(NS_SID, "origin-id", id="relay-m-1"), el(NS_RECEIPTS, "request"),
                 el(NS_REPLY, "reply", id="x", to="a@b.example"), el(NS_NICK, "nick", "Zoé <Z>"),
                 oob("https://upload.example/f?a=1&b=2", "report.pdf")])
    lang = ET.SubElement(root, f"{{{ns}}}subject", {"{http://www.w3.org/XML/1998/namespace}lang": "en"})
    lang.text = "s"
    lang.tail = "tail & more"
    ET.SubElement(root, f"{{{ns}}}thread")
    assert fastxml.serialize(root, ns) == tostring(root, xmlns=ns)
    assert fastxml.serialize(root, "jabber:client") == tostring(root, xmlns="jabber:client")

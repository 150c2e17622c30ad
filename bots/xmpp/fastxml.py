"""Four costs slixmpp pays per stanza that relay cannot afford at thousands of messages a second.

1. Escaping. slixmpp serialises every stanza (every send, and relay's copy of every received
   stanza for the journal) through `slixmpp.xmlstream.tostring.escape`, which maps a text one
   character at a time in a Python generator: a profile of `relay run` under the XMPP
   benchmark had it as the largest single cost on the main thread. `str.translate` with the
   same table produces the same string in C. `install()` swaps it in for the non-CDATA case
   (the only one slixmpp uses by default); tests/test_xmpp_fastxml.py checks the two agree.

2. Handler matching. For every incoming stanza slixmpp asks every registered handler whether
   it matches; `MatchXPath` wraps the stanza in a new element and runs ElementPath's Python
   path search, about 15 times per stanza on relay's streams. For the plain paths slixmpp and
   relay use (`{ns}tag` steps separated by `/`), comparing tags directly gives the same
   answer; anything else (predicates, wildcards) still goes to the original.

3. Building stanza objects to send. relay's component messages are built as plain
   ElementTree elements (C) and written by `serialize`, which produces what slixmpp's
   `tostring` produces for them (same elements, attributes, namespaces and text), skipping
   slixmpp's stanza objects and its serialiser.

4. One system call per stanza. slixmpp writes each stanza to the socket as it is sent, so a
   burst of 40 messages and their barrier ping is 41 `send()` calls here and 41 reads on the
   server. `BufferedWrites` collects what is sent during one event-loop step and writes it
   once at the end of the step; the bytes and their order are unchanged.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import xml.etree.ElementTree as ET
from typing import Any

from slixmpp.xmlstream.matcher import MatchXPath

_tostring = importlib.import_module("slixmpp.xmlstream.tostring")  # the module; the package re-exports a function of that name

_ORIGINAL_ESCAPE = _tostring.escape
_ORIGINAL_MATCH = MatchXPath.match
_SPECIAL = frozenset("[]*@.()|=")


def escape(text: str, use_cdata: bool = False) -> str:
    """`slixmpp.xmlstream.tostring.escape`, same output, without the per-character loop.

    Each `str.replace` runs only when its character is there (`in` is a memchr)."""
    if use_cdata:
        return _ORIGINAL_ESCAPE(text, use_cdata)
    if "&" in text:
        text = text.replace("&", "&amp;")
    if "<" in text:
        text = text.replace("<", "&lt;")
    if ">" in text:
        text = text.replace(">", "&gt;")
    if "'" in text:
        text = text.replace("'", "&apos;")
    if '"' in text:
        text = text.replace('"', "&quot;")
    return text


@functools.lru_cache(maxsize=512)
def _plain_steps(criteria: str) -> tuple[str, ...] | None:
    """The tags of a path made only of `{ns}tag` steps, else None (let ElementPath decide)."""
    steps: list[str] = []
    rest = criteria
    while rest:
        if rest.startswith("{"):
            close = rest.find("}")
            if close < 0:
                return None
            slash = rest.find("/", close)
        else:
            slash = rest.find("/")
        step, rest = (rest, "") if slash < 0 else (rest[:slash], rest[slash + 1:])
        local = step.rsplit("}", 1)[-1]
        if not local or _SPECIAL.intersection(local) or (not step.startswith("{") and "}" in step):
            return None
        steps.append(step)
    return tuple(steps) or None


def _descend(element: ET.Element, steps: tuple[str, ...]) -> bool:
    """Is there a path of children with these tags below `element` (ElementPath's answer)?"""
    if not steps:
        return True
    step, rest = steps[0], steps[1:]
    if not rest:
        return element.find(step) is not None  # a plain tag: ElementTree's C fast path
    return any(_descend(child, rest) for child in element if child.tag == step)


def match_xpath(self: MatchXPath, xml: Any) -> bool:
    """`MatchXPath.match` for plain tag paths without building an element per call."""
    steps = _plain_steps(self._criteria)
    if steps is None:
        return _ORIGINAL_MATCH(self, xml)
    real = xml.xml
    return real.tag == steps[0] and _descend(real, steps[1:])


XML_NS = "{http://www.w3.org/XML/1998/namespace}"


def serialize(element: ET.Element, outer_ns: str = "") -> str:
    """`slixmpp.xmlstream.tostring(element, xmlns=outer_ns)` for plain elements: an `xmlns`
    where the namespace changes, attributes in order, text and tails escaped."""
    tag = element.tag
    if tag[0] == "{":
        ns, name = tag[1:].split("}", 1)
    else:
        ns, name = "", tag
    out = ["<", name]
    if ns != outer_ns:
        out.append(f' xmlns="{escape(ns)}"')
    for key, value in element.attrib.items():
        if key[0] == "{":
            if not key.startswith(XML_NS):
                return _tostring.tostring(element, xmlns=outer_ns)
            key = "xml:" + key[len(XML_NS):]
        out.append(f' {key}="{escape(value)}"')
    text = element.text
    if not text and not len(element):
        out.append(" />")
        return "".join(out)
    out.append(">")
    if text:
        out.append(escape(text))
    for child in element:
        out.append(serialize(child, ns))
        if child.tail:
            out.append(escape(child.tail))
    out.append(f"</{name}>")
    return "".join(out)


def install() -> None:
    """Make slixmpp use `escape` and `match_xpath` (idempotent)."""
    _tostring.escape = escape
    MatchXPath.match = match_xpath  # type: ignore[method-assign]


class BufferedWrites:
    """Mixin for a slixmpp stream class: `send_raw` queues, one write per event-loop step.

    Everything slixmpp sends goes through `send_raw`, so the order on the wire is the order
    of the calls. The buffer is written at the end of the current step (`call_soon`), before
    the loop waits for I/O again, so nothing is delayed by more than the step that sent it.
    On a lost connection the unwritten bytes are dropped with the transport, like bytes in
    the transport's own buffer: relay's confirmations (barrier ping, stream management) never
    counted them as delivered.
    """

    transport: Any
    loop: asyncio.AbstractEventLoop

    def send_raw(self, data: str | bytes) -> None:
        if not self.transport:
            super().send_raw(data)  # type: ignore[misc]  # raises NotConnectedError
            return
        if isinstance(data, str):
            data = data.encode("utf-8")
        pending: list[bytes] | None = getattr(self, "_relay_pending", None)
        if pending:
            pending.append(data)
            return
        self._relay_pending = [data]
        self.loop.call_soon(self._relay_write)

    def _relay_write(self) -> None:
        pending, self._relay_pending = self._relay_pending, []
        if pending and self.transport:
            super().send_raw(b"".join(pending))  # type: ignore[misc]

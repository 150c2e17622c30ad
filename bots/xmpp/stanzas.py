"""Reading and writing the XMPP message payloads relay cares about, as plain ElementTree.

Pure functions over `xml.etree` elements, so the wire format is testable without a server
and does not depend on which slixmpp plugins happen to be loaded.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import datetime

NS_RECEIPTS = "urn:xmpp:receipts"
NS_CORRECT = "urn:xmpp:message-correct:0"
NS_RETRACT = "urn:xmpp:message-retract:1"
NS_RETRACT_0 = "urn:xmpp:message-retract:0"
NS_FASTEN = "urn:xmpp:fasten:0"
NS_OOB = "jabber:x:oob"
NS_NICK = "http://jabber.org/protocol/nick"
NS_SID = "urn:xmpp:sid:0"
NS_CHATSTATES = "http://jabber.org/protocol/chatstates"
NS_HINTS = "urn:xmpp:hints"
NS_DELAY = "urn:xmpp:delay"
NS_REPLY = "urn:xmpp:reply:0"
NS_FALLBACK = "urn:xmpp:fallback:0"
NS_MARKERS = "urn:xmpp:chat-markers:0"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_UPLOAD = "urn:xmpp:http:upload:0"
NS_PING = "urn:xmpp:ping"
DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
DISCO_INFO = "http://jabber.org/protocol/disco#info"

# Payloads that carry no content of their own: a message made only of these is not journaled.
EPHEMERAL_NS = frozenset({NS_CHATSTATES, NS_HINTS, NS_SID, NS_NICK, NS_DELAY})

RETRACT_FALLBACK = "This message was retracted (your client does not support message retraction)."


def _ns(tag: str) -> str:
    return tag[1:].split("}", 1)[0] if tag.startswith("{") else ""


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def q(ns: str, name: str) -> str:
    return f"{{{ns}}}{name}"


@dataclass(frozen=True)
class ParsedMessage:
    """What a message stanza means to relay, independent of who sent it."""

    kind: str
    """message | edit | delete | receipt | error | marker | ephemeral | event"""
    id: str = ""
    body: str = ""
    target_id: str = ""
    """The stanza id a correction, retraction, receipt, marker or error refers to."""
    urls: tuple[str, ...] = ()
    nick: str = ""
    reply_to_id: str = ""
    reply_to_jid: str = ""
    sent_at: float | None = None
    receipt_requested: bool = False
    error: str = ""
    extras: tuple[str, ...] = field(default=())


def parse_message(xml: ET.Element) -> ParsedMessage:
    """Classify a `<message/>` element and pull out the fields relay journals and forwards."""
    body = ""
    nick = ""
    origin_id = ""
    replace_id = ""
    retract_id = ""
    receipt_id = ""
    marker = ""
    marker_id = ""
    urls: list[str] = []
    reply_id = ""
    reply_jid = ""
    sent_at: float | None = None
    requested = False
    unknown: list[str] = []
    error = ""
    for child in xml:
        ns, name = _ns(child.tag), _local(child.tag)
        if name == "body" and ns in ("", "jabber:client", "jabber:component:accept"):
            body = child.text or ""
        elif name in ("thread", "subject") and ns in ("", "jabber:client", "jabber:component:accept"):
            continue
        elif name == "error":
            conditions = [_local(c.tag) for c in child if _ns(c.tag) == NS_STANZAS and _local(c.tag) != "text"]
            texts = [c.text or "" for c in child if _local(c.tag) == "text"]
            error = " ".join(filter(None, [conditions[0] if conditions else "error", *texts]))
        elif ns == NS_RECEIPTS and name == "request":
            requested = True
        elif ns == NS_RECEIPTS and name == "received":
            receipt_id = child.get("id", "")
        elif ns == NS_CORRECT and name == "replace":
            replace_id = child.get("id", "")
        elif ns == NS_RETRACT and name == "retract":
            retract_id = child.get("id", "")
        elif ns == NS_FASTEN and name == "apply-to":
            if any(_ns(c.tag) == NS_RETRACT_0 and _local(c.tag) == "retract" for c in child):
                retract_id = child.get("id", "")
            else:
                unknown.append(child.tag)
        elif ns == NS_OOB and name == "x":
            url = child.findtext(q(NS_OOB, "url")) or ""
            if url:
                urls.append(url.strip())
        elif ns == NS_NICK and name == "nick":
            nick = child.text or ""
        elif ns == NS_SID and name == "origin-id":
            origin_id = child.get("id", "")
        elif ns == NS_DELAY and name == "delay":
            sent_at = parse_stamp(child.get("stamp", ""))
        elif ns == NS_REPLY and name == "reply":
            reply_id, reply_jid = child.get("id", ""), child.get("to", "")
        elif ns == NS_MARKERS:
            if name in ("received", "displayed", "acknowledged"):
                marker, marker_id = name, child.get("id", "")
        elif ns in EPHEMERAL_NS or ns in (NS_FALLBACK, NS_RETRACT_0):
            continue
        else:
            unknown.append(child.tag)
    stanza_id = xml.get("id") or origin_id
    common = dict(id=stanza_id, nick=nick, sent_at=sent_at, receipt_requested=requested, extras=tuple(unknown))
    if xml.get("type") == "error":
        return ParsedMessage("error", target_id=stanza_id, error=error or "error", **common)
    if retract_id:
        return ParsedMessage("delete", target_id=retract_id, **common)
    if replace_id:
        return ParsedMessage("edit", body=body, target_id=replace_id, urls=tuple(urls), **common)
    if body or urls:
        if urls and body.strip() in urls:
            body = ""
        return ParsedMessage(
            "message", body=body, urls=tuple(urls), reply_to_id=reply_id, reply_to_jid=reply_jid, **common
        )
    if receipt_id:
        return ParsedMessage("receipt", target_id=receipt_id, **common)
    if marker:
        return ParsedMessage("marker", target_id=marker_id, body=marker, **common)
    if unknown:
        return ParsedMessage("event", **common)
    return ParsedMessage("ephemeral", **common)


def parse_stamp(stamp: str) -> float | None:
    """XEP-0082 date-time → POSIX seconds (None when unparsable)."""
    if not stamp:
        return None
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def xml_safe(text: str) -> str:
    """Text XML 1.0 can carry: other control characters would break the whole stream."""
    return _XML_ILLEGAL.sub("\ufffd", text)


_PID = re.compile(r"^([^:\[]*(?:\[[^\]]*\])?[^:]*):(.*)$", re.S)


def make_pid(bare_jid: str, stanza_id: str) -> str:
    """A platform id: the bare JID that wrote the stanza, then its id."""
    return f"{bare_jid}:{stanza_id}"


def split_pid(pid: str) -> tuple[str, str]:
    """Inverse of `make_pid` (a bare JID has no ':' outside an IPv6 literal)."""
    match = _PID.match(pid)
    if not match:
        return "", pid
    return match.group(1), match.group(2)


def el(ns: str, name: str, text: str | None = None, **attrs: str) -> ET.Element:
    node = ET.Element(q(ns, name), {k.replace("_", "-"): v for k, v in attrs.items()})
    if text is not None:
        node.text = text
    return node


def oob(url: str, desc: str = "") -> ET.Element:
    node = el(NS_OOB, "x")
    ET.SubElement(node, q(NS_OOB, "url")).text = url
    if desc:
        ET.SubElement(node, q(NS_OOB, "desc")).text = desc
    return node


def slot_request(filename: str, size: int, content_type: str) -> ET.Element:
    return el(NS_UPLOAD, "request", filename=filename, size=str(size), content_type=content_type)


@dataclass(frozen=True)
class Slot:
    put_url: str
    get_url: str
    headers: dict[str, str]


ALLOWED_PUT_HEADERS = frozenset({"authorization", "cookie", "expires"})


def parse_slot(iq_xml: ET.Element) -> Slot:
    """The PUT/GET URLs of an XEP-0363 slot result (only the headers the XEP allows)."""
    slot = iq_xml.find(q(NS_UPLOAD, "slot"))
    if slot is None:
        raise ValueError("upload service answered without a slot")
    put, get = slot.find(q(NS_UPLOAD, "put")), slot.find(q(NS_UPLOAD, "get"))
    if put is None or get is None or not put.get("url") or not get.get("url"):
        raise ValueError("upload slot lacks put/get urls")
    headers = {
        h.get("name", ""): (h.text or "").strip()
        for h in put.findall(q(NS_UPLOAD, "header"))
        if h.get("name", "").lower() in ALLOWED_PUT_HEADERS
    }
    return Slot(put_url=put.get("url", ""), get_url=get.get("url", ""), headers=headers)

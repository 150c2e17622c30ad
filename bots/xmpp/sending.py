"""Outgoing XMPP: chat messages (text parts and uploaded files), corrections (XEP-0308),
retractions (XEP-0424) and notices, each with a stanza id derived from the relay message id
so a retried send reuses it and is skipped when stream management showed the server took it
(`Link.taken`); and the stanza errors relay answers with."""

from __future__ import annotations

import collections
import json
import xml.etree.ElementTree as ET

from slixmpp import JID, Message
from slixmpp.basexmpp import BaseXMPP
from slixmpp.jid import InvalidJID

from bots.base import Permanent
from bots.send_order import SendOrder, Turn
from bots.xmpp import fastxml
from bots.xmpp.host import Host, bare
from bots.xmpp.stanzas import (
    NS_CORRECT,
    NS_FALLBACK,
    NS_HINTS,
    NS_NICK,
    NS_RECEIPTS,
    NS_REPLY,
    NS_RETRACT,
    NS_SID,
    NS_STANZAS,
    RETRACT_FALLBACK,
    el,
    make_pid,
    oob,
    q,
    split_pid,
    xml_safe,
)
from bots.xmpp.transfers import Transfers
from relay.model import Outgoing

RECENT = 4096
MAX_BODY_BYTES = 200_000
"""Bodies above this are refused: servers close a stream on an oversized stanza (Prosody's
default limit is 256 KiB), which would turn one message into an endless reconnect loop."""


def error_stanza(xmpp: BaseXMPP, to: JID | str, frm: JID | str | None, stanza_id: str, condition: str,
                 kind: str, text: str) -> Message:
    """A stanza error answering `stanza_id` (RFC 6120 §8.3), its text cut to fit one stanza."""
    err = xmpp.make_message(mto=to, mfrom=frm, mtype="error")
    if stanza_id:
        err["id"] = stanza_id
    node = ET.SubElement(err.xml, q(xmpp.default_ns, "error"), {"type": kind})
    ET.SubElement(node, q(NS_STANZAS, condition))
    ET.SubElement(node, q(NS_STANZAS, "text")).text = xml_safe(text)[:MAX_BODY_BYTES // 4]
    return err


class Sender:
    """Sends for one channel, in each conversation's call order (`SendOrder`)."""

    def __init__(self, host: Host, transfers: Transfers, contacts: set[tuple[str, str]],
                 conv_by_local: dict[str, str], employees: dict[str, str]) -> None:
        self.host = host
        self.transfers = transfers
        self._contacts = contacts
        self._conv_by_local = conv_by_local
        self._employees = employees
        self._recent: collections.OrderedDict[str, tuple[str, str, str]] = collections.OrderedDict()
        self._order = SendOrder()

    def remember(self, message_id: str, sender_full: str, to_bare: str, stanza_id: str) -> None:
        """Who wrote a recent message (by relay id), to which contact, so a refusal can answer it."""
        self._recent[message_id] = (sender_full, to_bare, stanza_id)
        while len(self._recent) > RECENT:
            self._recent.popitem(last=False)

    async def send(self, out: Outgoing) -> str:
        """Send and return once the server confirmed (see bots.xmpp.link).

        The outbox may call this for up to `send_window` messages of one conversation at once
        (relay.outbox). `SendOrder` writes them in call order (each waits for the previous
        one's write, not its confirmation) and, once one fails with `Retryable`, makes those
        already waiting refuse to write, so none overtakes it when the outbox sends it again.
        """
        async with self._order.turn((out.to.user, out.conversation)) as turn:
            return await self._send(out, turn)

    async def _send(self, out: Outgoing, turn: Turn) -> str:
        to = bare(out.to.user)
        if not to:
            raise Permanent(f"not a JID: {out.to.user!r}")
        size = len(xml_safe(out.text).encode())
        if size > MAX_BODY_BYTES:
            raise Permanent(f"message of {size} bytes is too long for XMPP (limit {MAX_BODY_BYTES})")
        if out.kind == "notice":
            return await self._send_notice(out, to, turn)
        mfrom = self.contact(self._local(out.conversation)) if self.host.staff else None
        if out.kind == "delete":
            return await self._send_retraction(out, to, mfrom, turn)
        if out.kind == "edit":
            return await self._send_correction(out, to, mfrom, turn)
        return await self._send_message(out, to, mfrom, turn)

    async def _confirm(self, turn: Turn, xmpp: BaseXMPP) -> None:
        """Let the conversation's next message be written, then wait for the server."""
        turn.release()
        await self.host.link.flush(xmpp)

    def _local(self, conversation: str) -> str:
        try:
            local = JID(f"{conversation}@{self.host.settings.jid}").user
        except InvalidJID:
            raise Permanent(f"conversation id {conversation!r} cannot be a JID localpart") from None
        if not local:
            raise Permanent("outgoing message without a conversation")
        return local

    def contact(self, local: str) -> str:
        return f"{local}@{self.host.settings.jid}"

    def _own_bare(self, mfrom: str | None) -> str:
        return mfrom or JID(self.host.settings.jid).bare

    @staticmethod
    def _sid(out: Outgoing, part: int = 0) -> str:
        return f"relay-{out.message_id}" + (f"-{part}" if part else "")

    @staticmethod
    def _safe_body(body: str) -> str:
        body = xml_safe(body)
        if len(body.encode()) > MAX_BODY_BYTES:
            raise Permanent(f"message of {len(body.encode())} bytes is too long for XMPP (limit {MAX_BODY_BYTES})")
        return body

    def _message(self, xmpp: BaseXMPP, to: str, mfrom: str | None, sid: str, body: str) -> Message:
        body = self._safe_body(body)
        msg = xmpp.make_message(mto=to, mbody=body, mtype="chat", mfrom=mfrom)
        msg["id"] = sid
        msg.xml.append(el(NS_SID, "origin-id", id=sid))
        msg.xml.append(el(NS_RECEIPTS, "request"))
        return msg

    def _send_chat(self, xmpp: BaseXMPP, to: str, mfrom: str | None, sid: str, body: str,
                   children: list[ET.Element]) -> None:
        """A chat message as `_message` builds it, plus these children. The component writes it as
        plain elements (`fastxml.serialize`, the bytes slixmpp would write); the client account
        sends the stanza object, which stream management must see to count it."""
        if not self.host.staff:
            msg = self._message(xmpp, to, mfrom, sid, body)
            msg.xml.extend(children)
            msg.send()
            return
        ns = xmpp.default_ns
        root = ET.Element(q(ns, "message"), {"type": "chat", "to": to, "from": mfrom or self.host.settings.jid, "id": sid})
        ET.SubElement(root, q(ns, "body")).text = self._safe_body(body)
        root.extend([el(NS_SID, "origin-id", id=sid), el(NS_RECEIPTS, "request"), *children])
        xmpp.send_raw(fastxml.serialize(root, ns))

    async def _send_message(self, out: Outgoing, to: str, mfrom: str | None, turn: Turn) -> str:
        uploads, notes = await self.transfers.upload_all(out)
        text = "\n".join(filter(None, [out.text, *notes]))
        parts: list[tuple[str, ET.Element | None]] = []
        if text or not uploads:
            parts.append((text, None))
        for url, desc in uploads:
            parts.append((url, oob(url, desc)))
        nick = (out.client.display if out.client else "") if self.host.staff else ""
        new_contact = False
        if self.host.staff:
            assert mfrom is not None
            local_part = JID(mfrom).user
            new_contact = (local_part, to) not in self._contacts
            if local_part not in self._conv_by_local:
                self._conv_by_local[local_part] = out.conversation
                await self.host.ctx.state.put(f"conv:{local_part}", out.conversation)
        xmpp = self.host.link.current()
        if new_contact:
            sub = xmpp.make_presence(pto=to, pfrom=mfrom, ptype="subscribe")
            if nick:
                sub.xml.append(el(NS_NICK, "nick", xml_safe(nick)))
            sub.send()
            xmpp.make_presence(pto=to, pfrom=mfrom).send()
        sids: list[str] = []
        for index, (body, extra) in enumerate(parts):
            sid = self._sid(out, index)
            sids.append(sid)
            if self.host.link.taken(sid):
                continue
            children: list[ET.Element] = []
            if out.reply_to and index == 0:
                author, target = split_pid(out.reply_to)
                children.append(el(NS_REPLY, "reply", id=target, to=author or to))
            if nick:
                children.append(el(NS_NICK, "nick", xml_safe(nick)))
            if extra is not None:
                children.append(extra)
            self._send_chat(xmpp, to, mfrom, sid, body, children)
        await self._confirm(turn, xmpp)
        if len(sids) > 1:
            await self.host.ctx.state.put(f"parts:{sids[0]}", json.dumps(sids[1:]))
        if new_contact:
            assert mfrom is not None
            self._contacts.add((JID(mfrom).user, to))
            await self.host.ctx.state.put("contacts", json.dumps(sorted(self._contacts)))
        return make_pid(self._own_bare(mfrom), sids[0])

    async def _send_correction(self, out: Outgoing, to: str, mfrom: str | None, turn: Turn) -> str:
        if not out.edits:
            raise Permanent("edit without the platform id it corrects")
        _, target = split_pid(out.edits)
        original = await self.host.ctx.state.get(f"orig:{target}") or target
        xmpp = self.host.link.current()
        sid = self._sid(out)
        msg = self._message(xmpp, to, mfrom, sid, out.text)
        msg.xml.append(el(NS_CORRECT, "replace", id=original))
        if not self.host.link.taken(sid):
            msg.send()
        await self._confirm(turn, xmpp)
        await self.host.ctx.state.put(f"orig:{sid}", original)
        return make_pid(self._own_bare(mfrom), sid)

    async def _send_retraction(self, out: Outgoing, to: str, mfrom: str | None, turn: Turn) -> str:
        if not out.edits:
            raise Permanent("delete without the platform id it retracts")
        _, target = split_pid(out.edits)
        original = await self.host.ctx.state.get(f"orig:{target}") or target
        extra = await self.host.ctx.state.get(f"parts:{original}")
        targets = [original, *(json.loads(extra) if extra else [])]
        xmpp = self.host.link.current()
        sid = self._sid(out)
        for index, target_id in enumerate(targets):
            if self.host.link.taken(self._sid(out, index)):
                continue
            msg = xmpp.make_message(mto=to, mbody=RETRACT_FALLBACK, mtype="chat", mfrom=mfrom)
            msg["id"] = self._sid(out, index)
            msg.xml.append(el(NS_SID, "origin-id", id=msg["id"]))
            msg.xml.append(el(NS_RETRACT, "retract", id=target_id))
            msg.xml.append(el(NS_FALLBACK, "fallback", **{"for": NS_RETRACT}))
            msg.xml.append(el(NS_HINTS, "store"))
            msg.send()
        await self._confirm(turn, xmpp)
        return make_pid(self._own_bare(mfrom), sid)

    async def _send_notice(self, out: Outgoing, to: str, turn: Turn) -> str:
        """Staff side, to a JID that is not an employee: the refusal is a stanza error.

        RFC 6120 §8.3 answers a stanza the recipient will not process with an error of the
        same id; `forbidden` (§8.3.3.4, type auth) says the sender lacks the permission, and the
        notice travels in the error's <text/>. Clients show it on the refused message.
        Servers drop errors sent to a bare JID (RFC 6121 §8.5.2.1.1), so this needs the
        sender's full JID, remembered from the refused stanza; when it is not known (e.g.
        after a restart), and for everyone else, the notice is an ordinary chat message.
        """
        xmpp = self.host.link.current()
        sid = self._sid(out)
        recent = self._recent.get(out.message_id)
        if self.host.staff and to not in self._employees and recent is not None:
            full, contact, refused_id = recent
            xmpp.send(error_stanza(xmpp, full, contact, refused_id, "forbidden", "auth", out.text))
            await self._confirm(turn, xmpp)
            return make_pid(contact, f"error:{refused_id}")
        mfrom: str | None = None
        if self.host.staff:
            try:
                mfrom = self.contact(self._local(out.conversation))
            except Permanent:
                mfrom = self.host.settings.jid
        msg = self._message(xmpp, to, mfrom, sid, out.text)
        if not self.host.link.taken(sid):
            msg.send()
        await self._confirm(turn, xmpp)
        return make_pid(self._own_bare(mfrom), sid)

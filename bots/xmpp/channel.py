"""The XMPP channel: staff side as a component (one contact per conversation), client side
as an ordinary account (one client per sender JID).

Inbound stanzas are handed to the hub in arrival order per (sender, contact) and
acknowledged with a delivery receipt only after the hub has journaled them. Outgoing
messages carry stanza ids derived from the relay message id, so corrections, retractions
and receipts can name them later, and a retried send reuses the same id (and is skipped
when stream management showed the server had taken it, see `Link.taken`).
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import json
import logging
import mimetypes
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

import aiohttp
from slixmpp import JID, Message, Presence
from slixmpp.basexmpp import BaseXMPP
from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.jid import InvalidJID
from slixmpp.plugins.xep_0030.stanza import DiscoInfo
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from bots.base import ChannelContext, Deliver, Permanent, Retryable
from bots.send_order import SendOrder, Turn
from bots.xmpp import fastxml, files
from bots.xmpp.link import Link, make_client
from bots.xmpp.settings import XmppSettings
from bots.xmpp.stanzas import (
    NS_CORRECT,
    NS_FALLBACK,
    NS_HINTS,
    NS_NICK,
    NS_OOB,
    NS_RECEIPTS,
    NS_REPLY,
    NS_RETRACT,
    NS_SID,
    NS_STANZAS,
    NS_UPLOAD,
    RETRACT_FALLBACK,
    ParsedMessage,
    Slot,
    el,
    make_pid,
    oob,
    parse_message,
    parse_slot,
    q,
    slot_request,
    split_pid,
    xml_safe,
)
from relay.model import Attachment, Inbound, Outgoing, Party, Receipt

log = logging.getLogger(__name__)

DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
DISCO_INFO = "http://jabber.org/protocol/disco#info"
FEATURES = (NS_RECEIPTS, NS_CORRECT, NS_RETRACT, NS_OOB, NS_SID)
RECENT = 4096
MAX_BODY_BYTES = 200_000
"""Bodies above this are refused: servers close a stream on an oversized stanza (Prosody's
default limit is 256 KiB), which would turn one message into an endless reconnect loop."""
MAX_IN_FLIGHT = 64
"""Stanzas of one sender handed to the hub before the first of them is acknowledged."""
SM_SESSION = "sm_session"
"""State key of the client account's stream-management session: {"id": ..., "h": ...}."""


@dataclass(frozen=True)
class _Prepared:
    """A stanza read into an Inbound, with what its acknowledgement needs."""

    parsed: ParsedMessage
    inbound: Inbound
    to_bare: str
    stanza_id: str


class XmppChannel:
    """A configured XMPP channel (see module docstring); `create` in bots.xmpp builds it."""

    def __init__(self, name: str, settings: XmppSettings, ctx: ChannelContext) -> None:
        self.name = name
        self.settings = settings
        self.ctx = ctx
        self.staff = settings.mode == "component"
        self.link = Link(settings, self._make_xmpp, self._on_online)
        self._deliver: Deliver | None = None
        self._session: aiohttp.ClientSession | None = None
        self._queues: dict[str, collections.deque[Message]] = {}
        self._workers: set[asyncio.Task[None]] = set()
        self._conv_by_local: dict[str, str] = {}
        self._contacts: set[tuple[str, str]] = set()
        self._recent: collections.OrderedDict[str, tuple[str, str, str]] = collections.OrderedDict()
        self._nicks: dict[str, str] = {}
        self._employees = {_bare(address) or address: address for address in ctx.employees}
        self._upload_target: tuple[str, int | None] | None = (
            (settings.upload_service, None) if settings.upload_service else None
        )
        self._upload_http_host: str | None = None
        self._probe_lock = asyncio.Lock()
        self._saving: asyncio.Task[None] | None = None
        self._save_again = False
        self._saved: tuple[str, int] | None = None
        self._order = SendOrder()
        self.send_window = settings.send_window
        """How many messages of one conversation the outbox may have in flight (relay.outbox)."""

    # --- lifecycle -------------------------------------------------------------------

    async def start(self, deliver: Deliver) -> None:
        self._deliver = deliver
        self._session = aiohttp.ClientSession()
        if self.staff:
            stored = await self.ctx.state.get("contacts")
            for pair in json.loads(stored) if stored else []:
                self._contacts.add((pair[0], pair[1]))
        elif self.settings.stream_management:
            saved = await self.ctx.state.get(SM_SESSION)
            if saved:
                try:
                    session = json.loads(saved)
                    self.link.restore(str(session["id"]), int(session["h"]))
                except (ValueError, KeyError, TypeError):
                    log.warning("xmpp %s: ignoring unreadable saved stream-management session", self.name)
        await self.link.start()

    async def stop(self) -> None:
        await self.link.stop()
        if self._workers:
            await asyncio.wait(set(self._workers), timeout=5.0)
        for task in list(self._workers):
            task.cancel()
        if self._saving is not None:
            await asyncio.gather(self._saving, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def wait_online(self, timeout: float | None = None) -> None:
        """Wait until the stream is up (for tests and start-up health checks)."""
        await asyncio.wait_for(self.link.online_event.wait(), timeout)

    def _make_xmpp(self) -> BaseXMPP:
        xmpp = make_client(self.settings)
        xmpp.register_plugin("xep_0030")
        for feature in FEATURES:
            xmpp.plugin["xep_0030"].add_feature(feature)
        if self.staff:
            xmpp.plugin["xep_0030"].api.register(self._contact_info, "get_info")
        ns = xmpp.default_ns
        xmpp.register_handler(Callback("relay message", MatchXPath(f"{{{ns}}}message"), self._on_message))
        if self.staff:
            xmpp.remove_handler("Presence")
            xmpp.register_handler(Callback("relay presence", MatchXPath(f"{{{ns}}}presence"), self._on_presence))
        else:
            xmpp.auto_authorize = True
            xmpp.auto_subscribe = False
        return xmpp

    @staticmethod
    def _contact_info(jid: JID, node: str | None, ifrom: JID, data: Any) -> DiscoInfo:
        """disco#info of a conversation contact, so clients offer corrections and retractions."""
        info = DiscoInfo()
        info.add_identity("client", "bot", name="relay")
        for feature in (DISCO_INFO, *FEATURES):
            info.add_feature(feature)
        return info

    def _on_online(self, xmpp: BaseXMPP) -> None:
        if self.staff:
            for local, employee in sorted(self._contacts):
                xmpp.make_presence(pto=employee, pfrom=self._contact(local)).send()
            for address in self.ctx.employees:
                self.ctx.wake(address)
        else:
            presence = xmpp.make_presence()
            if self.settings.nick:
                presence.xml.append(el(NS_NICK, "nick", self.settings.nick))
            presence.send()
            if self.settings.stream_management:
                self._save_session()

    # --- receiving -------------------------------------------------------------------

    def _on_message(self, msg: Message) -> None:
        key = f"{msg['from'].bare}|{msg['to'].bare}"
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = collections.deque()
            task = asyncio.create_task(self._drain(key, queue))
            self._workers.add(task)
            task.add_done_callback(self._workers.discard)
        queue.append(msg)

    async def _drain(self, key: str, queue: collections.deque[Message]) -> None:
        """Hand one sender's stanzas to the hub in arrival order, several in flight at once.

        Each stanza is prepared (files fetched) in order and its `deliver` started in order;
        the hub fixes a conversation's order when it submits to the journal, so a sender's
        messages share group commits instead of waiting one commit each. Receipts go back in
        order, each only after its own `deliver` returned (journaled).
        """
        in_flight: collections.deque[tuple[Message, _Prepared | None, asyncio.Task[Receipt] | None]] = (
            collections.deque())
        while queue or in_flight:
            while queue and len(in_flight) < MAX_IN_FLIGHT:
                msg = queue.popleft()
                try:
                    prepared = await self._prepare(msg)
                except Exception:  # noqa: BLE001
                    log.exception("xmpp %s: could not read a message", self.name)
                    in_flight.append((msg, None, None))
                    continue
                if prepared is None:
                    self._handled(msg)
                    continue
                in_flight.append((msg, prepared, asyncio.create_task(self._deliver_noted(msg, prepared))))
            if not in_flight:
                continue
            msg, prepared, task = in_flight.popleft()
            try:
                if prepared is None or task is None:
                    raise RuntimeError("stanza could not be read")
                await task
                self._acknowledge(msg, prepared)
            except Exception:  # noqa: BLE001
                log.exception("xmpp %s: could not hand a message to the hub", self.name)
                self._answer_error(msg, "internal-server-error", "wait",
                                   "relay could not record this message; please send it again")
            self._handled(msg)
        del self._queues[key]

    async def _prepare(self, msg: Message) -> _Prepared | None:
        """The Inbound for a stanza (None for chat states and the like, which are not journaled)."""
        parsed = parse_message(msg.xml)
        if parsed.kind == "ephemeral":
            return None
        raw = str(msg).encode()
        sender, to = msg["from"], msg["to"]
        bare, to_bare = sender.bare, to.bare
        chat = await self._chat_for(sender, to)
        user = self._employees.get(bare, bare) if self.staff else bare
        party = Party(self.name, user, await self._display(sender, parsed))
        stanza_id = parsed.id or "sha256-" + hashlib.sha256(raw).hexdigest()[:32]
        pid = make_pid(bare, stanza_id)
        if not sender.user or msg["type"] == "groupchat":  # a server or a room: journal, never a client
            parsed = ParsedMessage("event", id=parsed.id, body=parsed.body, sent_at=parsed.sent_at)
        inbound = await self._inbound(parsed, party, bare, chat, pid, to_bare, raw)
        return _Prepared(parsed, inbound, to_bare, stanza_id)

    async def _deliver_noted(self, msg: Message, prepared: _Prepared) -> Receipt:
        """Deliver, then note the sender's full JID at once (the hub may answer before we resume)."""
        assert self._deliver is not None
        receipt = await self._deliver(prepared.inbound)
        if prepared.parsed.kind in ("message", "edit"):
            self._remember(receipt.message_id, str(msg["from"]), prepared.to_bare, prepared.stanza_id)
        return receipt

    def _acknowledge(self, msg: Message, prepared: _Prepared) -> None:
        parsed = prepared.parsed
        if parsed.receipt_requested and parsed.id and parsed.kind in ("message", "edit"):
            self._ack(msg)

    def _handled(self, msg: Message) -> None:
        """Tell stream management this stanza is done with (see `Link.handled`)."""
        self.link.handled(msg)
        if not self.staff and self.settings.stream_management:
            self._save_session()

    def _save_session(self) -> None:
        """Store the stream-management id and handled count (one write at a time, the latest
        value), so that a restarted relay resumes the stream (see `Link.restore`)."""
        if self._saving is not None and not self._saving.done():
            self._save_again = True
            return
        self._saving = asyncio.create_task(self._save_loop())

    async def _save_loop(self) -> None:
        self._save_again = True
        while self._save_again:
            self._save_again = False
            state = self.link.session_state()
            if state is None or state == self._saved:
                continue
            try:
                await self.ctx.state.put(SM_SESSION, json.dumps({"id": state[0], "h": state[1]}))
            except Exception:  # noqa: BLE001 (a failed save costs re-sent duplicates after a crash, not data)
                log.exception("xmpp %s: could not save the stream-management session", self.name)
                return
            self._saved = state

    async def _inbound(self, parsed: ParsedMessage, party: Party, bare: str, chat: str, pid: str, to_bare: str,
                       raw: bytes) -> Inbound:
        """The Inbound for a parsed stanza; receipts, markers and bounces become kind `event`
        whose `reply_to` is the platform id `send` returned for the message they concern."""
        common: dict[str, Any] = dict(channel=self.name, sender=party, chat=chat, sent_at=parsed.sent_at, raw=raw)
        if parsed.kind in ("receipt", "marker", "error"):
            text = {"receipt": "receipt", "marker": f"marker:{parsed.body}"}.get(parsed.kind, f"error: {parsed.error}")
            label = parsed.body if parsed.kind == "marker" else parsed.kind
            return Inbound(platform_id=make_pid(bare, f"{label}:{parsed.target_id}"), kind="event", text=text,
                           reply_to=make_pid(to_bare, parsed.target_id), **common)
        if parsed.kind == "delete":
            return Inbound(platform_id=pid, kind="delete", edits=make_pid(bare, parsed.target_id), **common)
        if parsed.kind == "event":
            return Inbound(platform_id=pid, kind="event", text=parsed.body, **common)
        attachments = await self._fetch_all(parsed.urls)
        reply_to = None
        if parsed.reply_to_id:
            author = _bare(parsed.reply_to_jid) or bare
            reply_to = make_pid(author, parsed.reply_to_id)
        if parsed.kind == "edit":
            return Inbound(platform_id=pid, kind="edit", text=parsed.body, attachments=attachments,
                           edits=make_pid(bare, parsed.target_id), **common)
        return Inbound(platform_id=pid, kind="message", text=parsed.body, attachments=attachments,
                       reply_to=reply_to, **common)

    async def _fetch_all(self, urls: tuple[str, ...]) -> tuple[Attachment, ...]:
        if not urls:
            return ()
        assert self._session is not None
        limit = self.ctx.max_attachment_bytes
        allowed = await self._fetch_allowlist()
        return tuple(
            [await files.fetch(self._session, url, limit, self.settings.fetch_timeout, allowed) for url in urls]
        )

    async def _fetch_allowlist(self) -> frozenset[str]:
        """`fetch_hosts` when set, else the upload service's GET host (empty while unknown)."""
        if self.settings.fetch_hosts is not None:
            return frozenset(self.settings.fetch_hosts)
        async with self._probe_lock:
            if self._upload_http_host is None and self.link.online:
                try:
                    await self._request_slot(self.link.current(), "relay-probe.txt", 1, "text/plain")
                except (Permanent, Retryable) as exc:
                    log.warning("xmpp %s: upload service host unknown, incoming files refused: %s", self.name, exc)
        return frozenset({self._upload_http_host} if self._upload_http_host else ())

    async def _chat_for(self, sender: JID, to: JID) -> str:
        if not self.staff:
            return sender.bare
        local = to.user
        if not local:
            return ""
        conv = self._conv_by_local.get(local)
        if conv is None:
            conv = await self.ctx.state.get(f"conv:{local}") or local
            self._conv_by_local[local] = conv
        return conv

    async def _display(self, sender: JID, parsed: ParsedMessage) -> str:
        """Employees by their configured name; others by their latest XEP-0172 nick."""
        if self.staff:
            address = self._employees.get(sender.bare)
            if address is not None:
                return self.ctx.employees[address].name
        bare = sender.bare
        if parsed.nick:
            if self._nicks.get(bare) != parsed.nick:
                self._nicks[bare] = parsed.nick
                await self.ctx.state.put(f"nick:{bare}", parsed.nick)
            return parsed.nick
        if bare not in self._nicks:
            self._nicks[bare] = await self.ctx.state.get(f"nick:{bare}") or ""
        return self._nicks[bare] or sender.user or bare

    def _remember(self, message_id: str, sender_full: str, to_bare: str, stanza_id: str) -> None:
        """Who wrote a recent message (by relay id), to which contact, so a refusal can answer it."""
        self._recent[message_id] = (sender_full, to_bare, stanza_id)
        while len(self._recent) > RECENT:
            self._recent.popitem(last=False)

    def _ack(self, msg: Message) -> None:
        if not self.link.online:
            return
        xmpp = self.link.current()
        ack = xmpp.make_message(mto=msg["from"], mfrom=msg["to"] if self.staff else None)
        ack.xml.append(el(NS_RECEIPTS, "received", id=msg["id"]))
        ack.send()

    def _answer_error(self, msg: Message, condition: str, kind: str, text: str) -> None:
        if not self.link.online or msg["type"] == "error":
            return
        xmpp = self.link.current()
        xmpp.send(self._error_stanza(xmpp, msg["from"], msg["to"] if self.staff else None, msg["id"],
                                     condition, kind, text))

    @staticmethod
    def _error_stanza(xmpp: BaseXMPP, to: JID | str, frm: JID | str | None, stanza_id: str, condition: str,
                      kind: str, text: str) -> Message:
        err = xmpp.make_message(mto=to, mfrom=frm, mtype="error")
        if stanza_id:
            err["id"] = stanza_id
        node = ET.SubElement(err.xml, q(xmpp.default_ns, "error"), {"type": kind})
        ET.SubElement(node, q(NS_STANZAS, condition))
        ET.SubElement(node, q(NS_STANZAS, "text")).text = xml_safe(text)[:MAX_BODY_BYTES // 4]
        return err

    def _on_presence(self, pres: Presence) -> None:
        """Component side: contacts accept employees' subscriptions and answer their probes."""
        ptype, sender, to = pres["type"], pres["from"].bare, pres["to"]
        if not to.user or not self.link.online:
            return
        xmpp = self.link.current()
        if sender not in self._employees:
            if ptype == "subscribe":
                xmpp.make_presence(pto=sender, pfrom=to.bare, ptype="unsubscribed").send()
            return
        if ptype == "subscribe":
            xmpp.make_presence(pto=sender, pfrom=to.bare, ptype="subscribed").send()
            xmpp.make_presence(pto=sender, pfrom=to.bare).send()
        elif ptype in ("probe", "subscribed"):
            xmpp.make_presence(pto=sender, pfrom=to.bare).send()
        elif ptype in ("available", "chat", "away", "xa", "dnd", ""):
            self.ctx.wake(self._employees[sender])

    # --- sending ---------------------------------------------------------------------

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
        to = _bare(out.to.user)
        if not to:
            raise Permanent(f"not a JID: {out.to.user!r}")
        size = len(xml_safe(out.text).encode())
        if size > MAX_BODY_BYTES:
            raise Permanent(f"message of {size} bytes is too long for XMPP (limit {MAX_BODY_BYTES})")
        if out.kind == "notice":
            return await self._send_notice(out, to, turn)
        mfrom = self._contact(self._local(out.conversation)) if self.staff else None
        if out.kind == "delete":
            return await self._send_retraction(out, to, mfrom, turn)
        if out.kind == "edit":
            return await self._send_correction(out, to, mfrom, turn)
        return await self._send_message(out, to, mfrom, turn)

    async def _confirm(self, turn: Turn, xmpp: BaseXMPP) -> None:
        """Let the conversation's next message be written, then wait for the server."""
        turn.release()
        await self.link.flush(xmpp)

    def _local(self, conversation: str) -> str:
        try:
            local = JID(f"{conversation}@{self.settings.jid}").user
        except InvalidJID:
            raise Permanent(f"conversation id {conversation!r} cannot be a JID localpart") from None
        if not local:
            raise Permanent("outgoing message without a conversation")
        return local

    def _contact(self, local: str) -> str:
        return f"{local}@{self.settings.jid}"

    def _own_bare(self, mfrom: str | None) -> str:
        return mfrom or JID(self.settings.jid).bare

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
        if not self.staff:
            msg = self._message(xmpp, to, mfrom, sid, body)
            msg.xml.extend(children)
            msg.send()
            return
        ns = xmpp.default_ns
        root = ET.Element(q(ns, "message"), {"type": "chat", "to": to, "from": mfrom or self.settings.jid, "id": sid})
        ET.SubElement(root, q(ns, "body")).text = self._safe_body(body)
        root.extend([el(NS_SID, "origin-id", id=sid), el(NS_RECEIPTS, "request"), *children])
        xmpp.send_raw(fastxml.serialize(root, ns))

    async def _send_message(self, out: Outgoing, to: str, mfrom: str | None, turn: Turn) -> str:
        uploads, notes = await self._upload_all(out)
        text = "\n".join(filter(None, [out.text, *notes]))
        parts: list[tuple[str, ET.Element | None]] = []
        if text or not uploads:
            parts.append((text, None))
        for url, desc in uploads:
            parts.append((url, oob(url, desc)))
        nick = (out.client.display if out.client else "") if self.staff else ""
        new_contact = False
        if self.staff:
            assert mfrom is not None
            local_part = JID(mfrom).user
            new_contact = (local_part, to) not in self._contacts
            if local_part not in self._conv_by_local:
                self._conv_by_local[local_part] = out.conversation
                await self.ctx.state.put(f"conv:{local_part}", out.conversation)
        xmpp = self.link.current()
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
            if self.link.taken(sid):
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
            await self.ctx.state.put(f"parts:{sids[0]}", json.dumps(sids[1:]))
        if new_contact:
            assert mfrom is not None
            self._contacts.add((JID(mfrom).user, to))
            await self.ctx.state.put("contacts", json.dumps(sorted(self._contacts)))
        return make_pid(self._own_bare(mfrom), sids[0])

    async def _send_correction(self, out: Outgoing, to: str, mfrom: str | None, turn: Turn) -> str:
        if not out.edits:
            raise Permanent("edit without the platform id it corrects")
        _, target = split_pid(out.edits)
        original = await self.ctx.state.get(f"orig:{target}") or target
        xmpp = self.link.current()
        sid = self._sid(out)
        msg = self._message(xmpp, to, mfrom, sid, out.text)
        msg.xml.append(el(NS_CORRECT, "replace", id=original))
        if not self.link.taken(sid):
            msg.send()
        await self._confirm(turn, xmpp)
        await self.ctx.state.put(f"orig:{sid}", original)
        return make_pid(self._own_bare(mfrom), sid)

    async def _send_retraction(self, out: Outgoing, to: str, mfrom: str | None, turn: Turn) -> str:
        if not out.edits:
            raise Permanent("delete without the platform id it retracts")
        _, target = split_pid(out.edits)
        original = await self.ctx.state.get(f"orig:{target}") or target
        extra = await self.ctx.state.get(f"parts:{original}")
        targets = [original, *(json.loads(extra) if extra else [])]
        xmpp = self.link.current()
        sid = self._sid(out)
        for index, target_id in enumerate(targets):
            if self.link.taken(self._sid(out, index)):
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
        xmpp = self.link.current()
        sid = self._sid(out)
        recent = self._recent.get(out.message_id)
        if self.staff and to not in self._employees and recent is not None:
            full, contact, refused_id = recent
            xmpp.send(self._error_stanza(xmpp, full, contact, refused_id, "forbidden", "auth", out.text))
            await self._confirm(turn, xmpp)
            return make_pid(contact, f"error:{refused_id}")
        mfrom: str | None = None
        if self.staff:
            try:
                mfrom = self._contact(self._local(out.conversation))
            except Permanent:
                mfrom = self.settings.jid
        msg = self._message(xmpp, to, mfrom, sid, out.text)
        if not self.link.taken(sid):
            msg.send()
        await self._confirm(turn, xmpp)
        return make_pid(self._own_bare(mfrom), sid)

    # --- files -----------------------------------------------------------------------

    async def _upload_all(self, out: Outgoing) -> tuple[list[tuple[str, str]], list[str]]:
        """Upload every attachment that has bytes; name the others in a note, never drop them."""
        uploads: list[tuple[str, str]] = []
        notes: list[str] = []
        for att in out.attachments:
            if att.data:
                uploads.append((await self._upload(att), att.name))
            else:
                notes.append(f"[file {att.name} not delivered: {att.refused or 'content not available'}]")
        return uploads, notes

    async def _upload(self, att: Attachment) -> str:
        xmpp = self.link.current()
        _, max_size = await self._upload_service(xmpp)
        if max_size is not None and att.size > max_size:
            raise Permanent(f"file {att.name} is {att.size} bytes; the upload service accepts {max_size}")
        name = att.name.replace("/", "_") or "file"
        mime = att.mime or mimetypes.guess_type(name)[0] or "application/octet-stream"
        slot = await self._request_slot(xmpp, name, len(att.data), mime)
        assert self._session is not None
        try:
            await files.put(self._session, slot.put_url, slot.headers, att.data, mime, self.settings.fetch_timeout)
        except files.UploadRejected as exc:
            raise (Retryable(exc.reason) if exc.temporary else Permanent(exc.reason)) from None
        return slot.get_url

    async def _request_slot(self, xmpp: BaseXMPP, name: str, size: int, mime: str) -> Slot:
        """An upload slot; its GET URL's host becomes the default fetch allowlist.

        With no `fetch_hosts` and no upload yet, a slot for a 1-byte file is requested just to
        learn that host (never used; the server expires it)."""
        service, _ = await self._upload_service(xmpp)
        iq = xmpp.make_iq_get(ito=service, ifrom=self.settings.jid if self.staff else None)
        iq.xml.append(slot_request(name, size, mime))
        try:
            result = await iq.send(timeout=self.settings.send_timeout)
        except IqTimeout:
            raise Retryable("upload slot request timed out") from None
        except IqError as exc:
            condition = exc.iq["error"]["condition"]
            text = exc.iq["error"]["text"]
            if condition in ("resource-constraint", "internal-server-error", "service-unavailable"):
                raise Retryable(f"upload slot refused: {condition} {text}".strip()) from None
            raise Permanent(f"upload slot refused for {name}: {condition} {text}".strip()) from None
        slot = parse_slot(result.xml)
        try:
            self._upload_http_host = files.url_host(slot.get_url)
        except (ValueError, KeyError):
            log.warning("xmpp %s: upload slot GET URL %r has no usable host", self.name, slot.get_url)
        return slot

    async def _upload_service(self, xmpp: BaseXMPP) -> tuple[str, int | None]:
        if self._upload_target is not None:
            return self._upload_target
        ifrom = self.settings.jid if self.staff else None
        domain = self.settings.domain
        try:
            items = await xmpp.make_iq_get(DISCO_ITEMS, ito=domain, ifrom=ifrom).send(
                timeout=self.settings.send_timeout)
            candidates = [domain] + [
                item.get("jid", "") for item in items.xml.iter(q(DISCO_ITEMS, "item")) if item.get("jid")
            ]
            for jid in candidates:
                try:
                    info = await xmpp.make_iq_get(DISCO_INFO, ito=jid, ifrom=ifrom).send(
                        timeout=self.settings.send_timeout)
                except IqError:
                    continue
                features = {f.get("var") for f in info.xml.iter(q(DISCO_INFO, "feature"))}
                if NS_UPLOAD not in features:
                    continue
                self._upload_target = (jid, _max_file_size(info.xml))
                return self._upload_target
        except IqTimeout:
            raise Retryable("upload service discovery timed out") from None
        except IqError as exc:
            raise Retryable(f"upload service discovery failed: {exc.iq['error']['condition']}") from None
        raise Permanent(f"no HTTP File Upload service found on {domain} (set upload_service)")


def _max_file_size(info: ET.Element) -> int | None:
    for form in info.iter("{jabber:x:data}x"):
        fields = {f.get("var"): f.findtext("{jabber:x:data}value") for f in form.iter("{jabber:x:data}field")}
        if fields.get("FORM_TYPE") == NS_UPLOAD and fields.get("max-file-size"):
            try:
                return int(fields["max-file-size"] or "")
            except ValueError:
                return None
    return None


def _bare(jid: str) -> str:
    if not jid:
        return ""
    try:
        return JID(jid).bare
    except InvalidJID:
        return ""

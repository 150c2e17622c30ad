"""The XMPP channel: staff side as a component (one contact per conversation), client side
as an ordinary account (one client per sender JID).

Inbound stanzas are handed to the hub in arrival order per (sender, contact) and
acknowledged with a delivery receipt only after the hub has journaled them (reading them is
bots/xmpp/reading.py). Outgoing messages carry stanza ids derived from the relay message id,
so corrections, retractions and receipts can name them later, and a retried send reuses the
same id (bots/xmpp/sending.py); files go through bots/xmpp/transfers.py.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
from typing import Any

from slixmpp import JID, Message, Presence
from slixmpp.basexmpp import BaseXMPP
from slixmpp.plugins.xep_0030.stanza import DiscoInfo
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from bots.base import ChannelContext, Deliver
from bots.xmpp.host import bare
from bots.xmpp.link import Link, make_client
from bots.xmpp.reading import Prepared, StanzaReader
from bots.xmpp.sending import Sender, error_stanza
from bots.xmpp.settings import XmppSettings
from bots.xmpp.stanzas import (
    DISCO_INFO,
    NS_CORRECT,
    NS_NICK,
    NS_OOB,
    NS_RECEIPTS,
    NS_RETRACT,
    NS_SID,
    el,
)
from bots.xmpp.transfers import Transfers
from relay.model import Outgoing, Receipt

log = logging.getLogger(__name__)

FEATURES = (NS_RECEIPTS, NS_CORRECT, NS_RETRACT, NS_OOB, NS_SID)
MAX_IN_FLIGHT = 64
"""Stanzas of one sender handed to the hub before the first of them is acknowledged."""
SM_SESSION = "sm_session"
"""State key of the client account's stream-management session: {"id": ..., "h": ...}."""


class XmppChannel:
    """A configured XMPP channel (see module docstring); `create` in bots.xmpp builds it."""

    def __init__(self, name: str, settings: XmppSettings, ctx: ChannelContext) -> None:
        self.name = name
        self.settings = settings
        self.ctx = ctx
        self.exclusive = True
        """One XMPP session per account or component: on a shared journal only the lease holder connects."""
        self.staff = settings.mode == "component"
        self.link = Link(settings, self._make_xmpp, self._on_online)
        self._deliver: Deliver | None = None
        self._queues: dict[str, collections.deque[Message]] = {}
        self._workers: set[asyncio.Task[None]] = set()
        conv_by_local: dict[str, str] = {}
        self._contacts: set[tuple[str, str]] = set()
        self._employees = {bare(address) or address: address for address in ctx.employees}
        self.transfers = Transfers(self)
        self.reader = StanzaReader(self, self.transfers, conv_by_local, self._employees)
        self.sender = Sender(self, self.transfers, self._contacts, conv_by_local, self._employees)
        self._saving: asyncio.Task[None] | None = None
        self._save_again = False
        self._saved: tuple[str, int] | None = None
        self.send_window = settings.send_window
        """How many messages of one conversation the outbox may have in flight (relay.outbox)."""

    # --- lifecycle -------------------------------------------------------------------

    async def start(self, deliver: Deliver) -> None:
        self._deliver = deliver
        self.transfers.open()
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
        await self.transfers.close()

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
                xmpp.make_presence(pto=employee, pfrom=self.sender.contact(local)).send()
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
        in_flight: collections.deque[tuple[Message, Prepared | None, asyncio.Task[Receipt] | None]] = (
            collections.deque())
        while queue or in_flight:
            while queue and len(in_flight) < MAX_IN_FLIGHT:
                msg = queue.popleft()
                try:
                    prepared = await self.reader.prepare(msg)
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

    async def _deliver_noted(self, msg: Message, prepared: Prepared) -> Receipt:
        """Deliver, then note the sender's full JID at once (the hub may answer before we resume)."""
        assert self._deliver is not None
        receipt = await self._deliver(prepared.inbound)
        if prepared.parsed.kind in ("message", "edit"):
            self.sender.remember(receipt.message_id, str(msg["from"]), prepared.to_bare, prepared.stanza_id)
        return receipt

    def _acknowledge(self, msg: Message, prepared: Prepared) -> None:
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
        xmpp.send(error_stanza(xmpp, msg["from"], msg["to"] if self.staff else None, msg["id"],
                                     condition, kind, text))

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
        """Send and return once the server confirmed (bots/xmpp/sending.py)."""
        return await self.sender.send(out)

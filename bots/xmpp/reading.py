"""Incoming XMPP stanzas into Inbound: who wrote (employees by their configured name, others
by their XEP-0172 nick), which conversation (the staff side's contact localpart), and what
(message, correction, retraction, receipt, marker, bounce or event), files fetched.
Receipts back to the sender are the channel's job, after the hub journaled the Inbound."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from slixmpp import JID, Message

from bots.xmpp.host import Host, bare
from bots.xmpp.stanzas import ParsedMessage, make_pid, parse_message
from bots.xmpp.transfers import Transfers
from relay.model import Inbound, Party


@dataclass(frozen=True)
class Prepared:
    """A stanza read into an Inbound, with what its acknowledgement needs."""

    parsed: ParsedMessage
    inbound: Inbound
    to_bare: str
    stanza_id: str


class StanzaReader:
    """Reads the stanzas of one channel; remembers nicks and contact conversations."""

    def __init__(self, host: Host, transfers: Transfers, conv_by_local: dict[str, str],
                 employees: dict[str, str]) -> None:
        self.host = host
        self.transfers = transfers
        self._conv_by_local = conv_by_local
        self._employees = employees
        self._nicks: dict[str, str] = {}

    async def prepare(self, msg: Message) -> Prepared | None:
        """The Inbound for a stanza (None for chat states and the like, which are not journaled)."""
        parsed = parse_message(msg.xml)
        if parsed.kind == "ephemeral":
            return None
        raw = str(msg).encode()
        sender, to = msg["from"], msg["to"]
        bare, to_bare = sender.bare, to.bare
        chat = await self._chat_for(sender, to)
        user = self._employees.get(bare, bare) if self.host.staff else bare
        party = Party(self.host.name, user, await self._display(sender, parsed))
        stanza_id = parsed.id or "sha256-" + hashlib.sha256(raw).hexdigest()[:32]
        pid = make_pid(bare, stanza_id)
        if not sender.user or msg["type"] == "groupchat":  # a server or a room: journal, never a client
            parsed = ParsedMessage("event", id=parsed.id, body=parsed.body, sent_at=parsed.sent_at)
        inbound = await self._inbound(parsed, party, bare, chat, pid, to_bare, raw)
        return Prepared(parsed, inbound, to_bare, stanza_id)

    async def _inbound(self, parsed: ParsedMessage, party: Party, bare: str, chat: str, pid: str, to_bare: str,
                       raw: bytes) -> Inbound:
        """The Inbound for a parsed stanza; receipts, markers and bounces become kind `event`
        whose `reply_to` is the platform id `send` returned for the message they concern."""
        common: dict[str, Any] = dict(channel=self.host.name, sender=party, chat=chat, sent_at=parsed.sent_at, raw=raw)
        if parsed.kind in ("receipt", "marker", "error"):
            text = {"receipt": "receipt", "marker": f"marker:{parsed.body}"}.get(parsed.kind, f"error: {parsed.error}")
            label = parsed.body if parsed.kind == "marker" else parsed.kind
            return Inbound(platform_id=make_pid(bare, f"{label}:{parsed.target_id}"), kind="event", text=text,
                           reply_to=make_pid(to_bare, parsed.target_id), **common)
        if parsed.kind == "delete":
            return Inbound(platform_id=pid, kind="delete", edits=make_pid(bare, parsed.target_id), **common)
        if parsed.kind == "event":
            return Inbound(platform_id=pid, kind="event", text=parsed.body, **common)
        attachments = await self.transfers.fetch_all(parsed.urls, self.host.ctx.max_attachment_bytes)
        reply_to = None
        if parsed.reply_to_id:
            author = bare(parsed.reply_to_jid) or bare
            reply_to = make_pid(author, parsed.reply_to_id)
        if parsed.kind == "edit":
            return Inbound(platform_id=pid, kind="edit", text=parsed.body, attachments=attachments,
                           edits=make_pid(bare, parsed.target_id), **common)
        return Inbound(platform_id=pid, kind="message", text=parsed.body, attachments=attachments,
                       reply_to=reply_to, **common)

    async def _chat_for(self, sender: JID, to: JID) -> str:
        if not self.host.staff:
            return sender.bare
        local = to.user
        if not local:
            return ""
        conv = self._conv_by_local.get(local)
        if conv is None:
            conv = await self.host.ctx.state.get(f"conv:{local}") or local
            self._conv_by_local[local] = conv
        return conv

    async def _display(self, sender: JID, parsed: ParsedMessage) -> str:
        """Employees by their configured name; others by their latest XEP-0172 nick."""
        if self.host.staff:
            address = self._employees.get(sender.bare)
            if address is not None:
                return self.host.ctx.employees[address].name
        bare = sender.bare
        if parsed.nick:
            if self._nicks.get(bare) != parsed.nick:
                self._nicks[bare] = parsed.nick
                await self.host.ctx.state.put(f"nick:{bare}", parsed.nick)
            return parsed.nick
        if bare not in self._nicks:
            self._nicks[bare] = await self.host.ctx.state.get(f"nick:{bare}") or ""
        return self._nicks[bare] or sender.user or bare

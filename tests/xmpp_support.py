"""Test helpers for the XMPP channel: real slixmpp users, a recording hub, an in-memory state.

`XmppUser` is an ordinary XMPP client (the employee or the client in a test); it knows
nothing of relay and reconnects by itself when Prosody restarts.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any, Callable

from aiohttp import web
from slixmpp import ClientXMPP, Message, Presence
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from bots.base import ChannelContext, EmployeeInfo
from relay.model import Inbound, Receipt, conversation_id
from tests.channel_support import MemoryState  # noqa: F401  (re-exported for the tests)


@dataclass
class Recorder:
    """The `deliver` callback a test gives a channel: records inbounds, returns receipts."""

    inbounds: list[Inbound] = field(default_factory=list)
    seen: dict[tuple[str, str], str] = field(default_factory=dict)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    counter: itertools.count = field(default_factory=lambda: itertools.count(1))

    async def __call__(self, inbound: Inbound) -> Receipt:
        key = (inbound.channel, inbound.platform_id)
        conv = conversation_id(inbound.channel, inbound.chat)
        if key in self.seen:
            return Receipt(self.seen[key], conv, duplicate=True)
        message_id = f"m-{next(self.counter)}"
        self.seen[key] = message_id
        self.inbounds.append(inbound)
        self.arrived.set()
        return Receipt(message_id, conv)

    async def wait_for(self, predicate: Callable[[Inbound], bool], timeout: float = 10.0) -> Inbound:
        async def scan() -> Inbound:
            start = 0
            while True:
                for inbound in self.inbounds[start:]:
                    if predicate(inbound):
                        return inbound
                start = len(self.inbounds)
                self.arrived.clear()
                await self.arrived.wait()

        return await asyncio.wait_for(scan(), timeout)


def make_ctx(name: str, side: str, tmp: str, employees: dict[str, str] | None = None,
             max_attachment_bytes: int = 1024 * 1024, wakes: list[str] | None = None) -> ChannelContext:
    """A ChannelContext as the host would build it; `employees` maps bare JID → name."""
    infos = {jid: EmployeeInfo(id=jid.split("@")[0], name=nm, address=jid) for jid, nm in (employees or {}).items()}
    woken = wakes if wakes is not None else []
    return ChannelContext(
        name=name,
        side=side,
        state=MemoryState(),
        app=web.Application(),
        data_dir=tmp,
        max_attachment_bytes=max_attachment_bytes,
        wake=woken.append,
        employees=infos,
    )


PLUGINS = ("xep_0030", "xep_0066", "xep_0172", "xep_0184", "xep_0198", "xep_0308", "xep_0359", "xep_0363", "xep_0424")


class XmppUser:
    """A person with an ordinary XMPP client: sends, receives, uploads, accepts subscriptions."""

    def __init__(self, jid: str, password: str, port: int, host: str = "127.0.0.1") -> None:
        self.jid, self.password, self.host, self.port = jid, password, host, port
        self.messages: list[Message] = []
        self.presences: list[Presence] = []
        self.arrived = asyncio.Event()
        self.online = asyncio.Event()
        self.sessions = 0
        self._stopping = False
        self._reconnector: asyncio.Task[None] | None = None
        self.xmpp = self._build()

    def _build(self) -> ClientXMPP:
        xmpp = ClientXMPP(self.jid, self.password, plugin_config={"feature_mechanisms": {"unencrypted_scram": True}})
        xmpp.enable_starttls = False
        xmpp.enable_direct_tls = False
        xmpp.enable_plaintext = True
        for plugin in PLUGINS:
            xmpp.register_plugin(plugin)
        xmpp.plugin["xep_0184"].auto_ack = True
        xmpp.auto_authorize = True
        xmpp.auto_subscribe = True
        xmpp.add_event_handler("session_start", self._session_start)
        xmpp.add_event_handler("disconnected", self._disconnected)
        xmpp.add_event_handler("presence", self.presences.append)
        ns = xmpp.default_ns
        xmpp.register_handler(Callback("test message", MatchXPath(f"{{{ns}}}message"), self._message))
        return xmpp

    def _message(self, msg: Message) -> None:
        self.messages.append(msg)
        self.arrived.set()

    async def _session_start(self, _: Any) -> None:
        self.xmpp.send_presence()
        self.sessions += 1
        self.online.set()

    def _disconnected(self, _: Any) -> None:
        self.online.clear()
        if not self._stopping and (self._reconnector is None or self._reconnector.done()):
            self._reconnector = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        while not self._stopping and not self.online.is_set():
            await asyncio.sleep(0.2)
            old = self.xmpp
            old.cancel_connection_attempt()
            self.xmpp = self._build()
            self.xmpp.connect(self.host, self.port)
            try:
                await asyncio.wait_for(self.online.wait(), 2.0)
            except asyncio.TimeoutError:
                self.xmpp.cancel_connection_attempt()
                if self.xmpp.transport is not None:
                    self.xmpp.abort()

    async def connect(self, timeout: float = 10.0) -> XmppUser:
        self.xmpp.connect(self.host, self.port)
        await asyncio.wait_for(self.online.wait(), timeout)
        return self

    async def stop(self) -> None:
        self._stopping = True
        if self._reconnector is not None:
            self._reconnector.cancel()
        if self.xmpp.transport is not None:
            try:
                await asyncio.wait_for(self.xmpp.disconnect(wait=0.5), 2.0)
            except Exception:  # noqa: BLE001
                self.xmpp.abort()

    def send(self, to: str, body: str = "", mid: str | None = None, *, extra: list[ET.Element] | None = None,
             receipt: bool = True) -> Message:
        msg = self.xmpp.make_message(mto=to, mbody=body or None, mtype="chat")
        if mid:
            msg["id"] = mid
            msg["origin_id"]["id"] = mid
        if receipt:
            msg["request_receipt"] = True
        for node in extra or []:
            msg.xml.append(node)
        msg.send()
        return msg

    def correct(self, to: str, original: str, body: str, mid: str) -> Message:
        msg = self.xmpp.make_message(mto=to, mbody=body, mtype="chat")
        msg["id"] = mid
        msg["replace"]["id"] = original
        msg.send()
        return msg

    def retract(self, to: str, original: str) -> Message:
        return self.xmpp.plugin["xep_0424"].send_retraction(mto=to, id=original)

    async def upload(self, name: str, data: bytes, mime: str = "application/octet-stream") -> str:
        return await self.xmpp.plugin["xep_0363"].upload_file(
            name, size=len(data), content_type=mime, input_file=io.BytesIO(data), timeout=10
        )

    async def wait_message(self, predicate: Callable[[Message], bool], timeout: float = 10.0) -> Message:
        async def scan() -> Message:
            start = 0
            while True:
                for msg in self.messages[start:]:
                    if predicate(msg):
                        return msg
                start = len(self.messages)
                self.arrived.clear()
                await self.arrived.wait()

        return await asyncio.wait_for(scan(), timeout)

    def bodies_from(self, sender_bare: str) -> list[str]:
        return [m["body"] for m in self.messages if m["from"].bare == sender_bare and m["body"]
                and m["type"] != "error" and m.xml.find("{urn:xmpp:message-retract:1}retract") is None]

    def distinct_bodies_from(self, sender_bare: str) -> list[str]:
        """What a client that drops a repeated stanza id (XEP-0359 origin-id) shows, with the
        check that a repeat really is the same message (same id, same body)."""
        seen: dict[str, str] = {}
        out: list[str] = []
        for m in self.messages:
            if m["from"].bare != sender_bare or not m["body"] or m["type"] == "error":
                continue
            if m.xml.find("{urn:xmpp:message-retract:1}retract") is not None:
                continue
            mid = m["id"]
            if mid and mid in seen:
                assert seen[mid] == m["body"], f"stanza id {mid} reused for a different body"
                continue
            if mid:
                seen[mid] = m["body"]
            out.append(m["body"])
        return out


def relay_config(prosody: Any, data_dir: str, desk: str, desk_password: str, employees: dict[str, str],
                 policies: str, **extra: Any) -> dict[str, Any]:
    """A relay config with the XMPP client side (`desk` account) and staff side (component).

    `employees` maps an employee id to their bare JID; all of them serve the one desk.
    """
    cfg: dict[str, Any] = {
        "data_dir": data_dir,
        "listen": {"host": "127.0.0.1", "port": 0},
        "policies": {"dir": policies, "reload_seconds": 5},
        "journal": {"checkpoint_seconds": 3600},
        "outbox": {"base_delay": 0.05, "max_delay": 0.5},
        "channels": {
            "xmpp-clients": {"network": "xmpp", "side": "client", "jid": desk, "password": desk_password,
                             "host": "127.0.0.1", "port": prosody.c2s_port, "use_tls": False,
                             "reconnect_base": 0.05, "reconnect_max": 0.5},
            "xmpp-staff": {"network": "xmpp", "side": "staff", "jid": prosody.component_domain,
                           "secret": prosody.component_secret, "host": "127.0.0.1",
                           "port": prosody.component_port, "use_tls": False,
                           "reconnect_base": 0.05, "reconnect_max": 0.5},
        },
        "employees": {
            eid: {"name": eid.rstrip("0123456789").title(), "staff": {"channel": "xmpp-staff", "address": jid},
                  "groups": ["advisors"]}
            for eid, jid in employees.items()
        },
        "desks": {"advisors": {"clients": ["xmpp-clients"], "members": list(employees)}},
    }
    cfg.update(extra)
    return cfg


class CuttableProxy:
    """A TCP relay on 127.0.0.1 in front of Prosody that a test can make lose the server's
    answers (`hold_replies`) and then cut, as a dying network does, without stopping Prosody."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.hold = False
        self._pairs: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = []
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> CuttableProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._pairs.append((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, holdable: bool) -> None:
            try:
                while data := await src.read(65536):
                    if holdable and self.hold:
                        continue
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer, False), pipe(up_reader, writer, True))

    def hold_replies(self) -> None:
        self.hold = True

    def cut(self) -> None:
        """Abort every connection (no closing handshake) and pass traffic again afterwards."""
        for writer, up_writer in self._pairs:
            writer.transport.abort()
            up_writer.transport.abort()
        self._pairs.clear()
        self.hold = False

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

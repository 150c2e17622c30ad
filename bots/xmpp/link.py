"""One XMPP connection that keeps itself up, and tells `send` when a stanza is really out.

slixmpp's `send` only queues; a stanza is not safely with the server until the server has
processed it. The server handles a stream's stanzas in order, so the answer to a ping sent
after a batch of messages proves the whole batch arrived (a "barrier"). A send returns only
after its barrier; if the stream dies first the send raises `Retryable` and the outbox
retries in order. Reconnection uses capped exponential backoff with jitter and a fresh
slixmpp object per attempt, so no stale queue replays stanzas behind the outbox's back.

A client account also uses stream management (XEP-0198) when the server offers it: the next
stream asks to resume the lost one, and the count the server answers with (`h` in
<resumed/> or <failed/>) says which unconfirmed stanzas it had taken; `taken` tells the
channel, so the outbox's retry does not send those a second time. Components (XEP-0114)
have no stream management. The channel stores the stream's id and count (`session_state`)
and gives them back after a restart (`restore`), so a relay that was killed resumes its
stream and the server sends again what it had not acknowledged.

The count this side reports (`h` in <a/>) is honest: a message stanza counts as handled only
once the channel says so (`Link.handled`, after the hub journaled it), not when it was parsed.
A relay that dies with stanzas still in memory has not acknowledged them, so the server keeps
them (re-sent on resumption, or kept offline when the session ends) and nothing is lost.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import xml.etree.ElementTree as ET
from typing import Any, Callable

from slixmpp import ClientXMPP, ComponentXMPP, Iq, Message, Presence
from slixmpp.basexmpp import BaseXMPP
from slixmpp.exceptions import IqError, IqTimeout

from bots.base import Retryable
from bots.xmpp import fastxml
from bots.xmpp.settings import XmppSettings
from bots.xmpp.stanzas import NS_PING, q

log = logging.getLogger(__name__)

Factory = Callable[[], BaseXMPP]
OnOnline = Callable[[BaseXMPP], None]
SM_MODULUS = 2 ** 32
TAKEN_MAX = 4096


class _Entry:
    """One incoming stanza in stream order; `done` once handled."""

    __slots__ = ("counter", "done")

    def __init__(self, counter: _HandledCounter) -> None:
        self.counter = counter
        self.done = False


class _HandledCounter:
    """XEP-0198's inbound count for one stream, advanced over the handled prefix only.

    Replaces slixmpp's filter, which counts a stanza as handled as soon as it is parsed."""

    def __init__(self, sm: object) -> None:
        self.sm = sm
        self.pending: collections.deque[_Entry] = collections.deque()

    def incoming(self, stanza: object) -> object:
        sm: Any = self.sm
        if not sm.enabled_in or not isinstance(stanza, (Message, Presence, Iq)):
            return stanza
        entry = _Entry(self)
        if isinstance(stanza, Message):
            stanza.relay_entry = entry  # type: ignore[attr-defined]
        else:
            entry.done = True  # handled by slixmpp's own handlers as it is dispatched
        self.pending.append(entry)
        self.advance()
        return stanza

    def advance(self) -> None:
        sm: Any = self.sm
        while self.pending and self.pending[0].done:
            self.pending.popleft()
            sm.handled = (sm.handled + 1) % SM_MODULUS


class _ResumeNoise(logging.Filter):
    """slixmpp logs an error when a resumed stream acks stanzas its (fresh) queue never held;
    here that is expected: the unconfirmed stanzas are settled by `Link`, not resent."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Inconsistent sequence numbers")


logging.getLogger("slixmpp.plugins.xep_0198.stream_management").addFilter(_ResumeNoise())


fastxml.install()


class _Component(fastxml.BufferedWrites, ComponentXMPP):
    """The staff-side stream: a component whose writes are batched per loop step."""


class _Client(fastxml.BufferedWrites, ClientXMPP):
    """The client-side stream: an account whose writes are batched per loop step."""


def backoff_delay(failures: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Capped exponential backoff with "equal jitter": in [d/2, d], d = min(cap, base * 2^(n-1))."""
    rng = rng or random
    delay = min(cap, base * (2 ** max(0, failures - 1)))
    return delay / 2 + rng.random() * delay / 2


def make_client(settings: XmppSettings) -> BaseXMPP:
    """A slixmpp stream for the configured mode, TLS as configured."""
    xmpp: BaseXMPP
    if settings.mode == "component":
        xmpp = _Component(settings.jid, settings.secret, settings.host, settings.port)
        xmpp.enable_direct_tls = settings.use_tls
        xmpp.enable_plaintext = not settings.use_tls
    else:
        plain = {} if settings.use_tls else {"feature_mechanisms": {"unencrypted_scram": True}}
        xmpp = _Client(settings.jid, settings.secret, plugin_config=plain)
        if not settings.use_tls:
            xmpp.enable_starttls = False
            xmpp.enable_direct_tls = False
            xmpp.enable_plaintext = True
        if settings.stream_management:
            xmpp.register_plugin("xep_0198")
            sm = xmpp.plugin["xep_0198"]
            xmpp.del_filter("in", sm._handle_incoming)
            xmpp.add_filter("in", _HandledCounter(sm).incoming)
    xmpp.whitespace_keepalive_interval = 60
    return xmpp


class Link:
    """Keeps one logical stream up; `current()` is the live stream or raises `Retryable`."""

    def __init__(self, settings: XmppSettings, factory: Factory, on_online: OnOnline) -> None:
        self.settings = settings
        self._factory = factory
        self._on_online = on_online
        self._xmpp: BaseXMPP | None = None
        self._online = False
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._barrier: asyncio.Future[None] | None = None
        self._inflight: set[asyncio.Future[None]] = set()
        self._lost: asyncio.Future[object] | None = None
        self._previous: BaseXMPP | None = None
        self._taken: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._restored: tuple[str, int] | None = None
        self.online_event = asyncio.Event()
        self.failures = 0
        self.connections = 0
        self.last_error = ""

    @property
    def online(self) -> bool:
        return self._online and self._xmpp is not None

    def current(self) -> BaseXMPP:
        if not self.online or self._xmpp is None:
            raise Retryable("xmpp disconnected", after=min(1.0, self.settings.reconnect_max))
        return self._xmpp

    @staticmethod
    def handled(stanza: Message) -> None:
        """The channel is done with an incoming message (journaled, refused or ignored): stream
        management may now count it as handled."""
        entry: _Entry | None = getattr(stanza, "relay_entry", None)
        if entry is not None and not entry.done:
            entry.done = True
            entry.counter.advance()

    def taken(self, stanza_id: str) -> bool:
        """The server confirmed (by stream management) a stanza whose send was reported lost."""
        return stanza_id in self._taken

    def restore(self, sm_id: str, handled: int) -> None:
        """Resume this stream-management session (saved by an earlier process) when connecting.

        `handled` must count only stanzas that were journaled; the server re-sends the rest.
        If the server no longer has the session it answers <failed/> and a new one starts."""
        self._restored = (sm_id, handled % SM_MODULUS)

    def session_state(self) -> tuple[str, int] | None:
        """The live stream-management session id and its honest handled count, if any."""
        xmpp = self._xmpp
        sm: Any = xmpp.plugin["xep_0198"] if xmpp is not None and "xep_0198" in xmpp.plugin else None
        if sm is None or not sm.sm_id or not sm.enabled_in:
            return None
        return str(sm.sm_id), int(sm.handled)

    def _carry_over(self, xmpp: BaseXMPP) -> None:
        """Have `xmpp` resume the previous stream's session; settle its unconfirmed stanzas by `h`."""
        previous = self._previous
        if previous is None and self._restored is not None and "xep_0198" in xmpp.plugin:
            sm: Any = xmpp.plugin["xep_0198"]
            sm.sm_id, sm.handled = self._restored
            sm.seq = sm.last_ack = 0
            return
        if previous is None or "xep_0198" not in xmpp.plugin or "xep_0198" not in previous.plugin:
            return
        old, new = previous.plugin["xep_0198"], xmpp.plugin["xep_0198"]
        if not old.sm_id:
            return
        new.sm_id, new.handled, new.seq, new.last_ack = old.sm_id, old.handled, old.seq, old.last_ack
        pending = [stanza for _, stanza in old.unacked_queue]
        base = old.last_ack

        def settle(answer: object) -> None:
            h = getattr(answer, "xml", None)
            value = h.get("h") if h is not None else None
            if value is None or not value.isdigit():
                return
            count = (int(value) - base) % SM_MODULUS
            for stanza in pending[:count]:
                if isinstance(stanza, Message) and stanza["id"]:
                    self._taken[stanza["id"]] = None
            while len(self._taken) > TAKEN_MAX:
                self._taken.popitem(last=False)
            pending.clear()

        xmpp.add_event_handler("session_resumed", settle)
        xmpp.add_event_handler("sm_failed", settle)

    async def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name=f"xmpp-link-{self.settings.jid}")

    async def stop(self) -> None:
        self._stopping = True
        xmpp, self._xmpp = self._xmpp, None
        self._go_offline("channel stopped")
        if xmpp is not None:
            try:
                await asyncio.wait_for(xmpp.disconnect(wait=1.0), 2.0)
            except Exception:  # noqa: BLE001 (a timeout or a dead transport: close it hard)
                xmpp.abort()
            self._discard(xmpp)
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def flush(self, xmpp: BaseXMPP) -> None:
        """Return once the server has processed everything queued on `xmpp` so far.

        One barrier ping is in flight at a time: sends made while it travels wait for the next
        one, which leaves when it returns. Under load a ping confirms everything sent during one
        round trip (like a group commit); when idle it leaves at once.
        """
        loop = asyncio.get_running_loop()
        fut = self._barrier
        if fut is None:
            fut = loop.create_future()
            fut.add_done_callback(lambda f: f.cancelled() or f.exception())  # waiters may be gone
            self._barrier = fut
            if not self._inflight:
                loop.call_soon(self._fire, xmpp, fut)
        await asyncio.shield(fut)

    def _fire(self, xmpp: BaseXMPP, fut: asyncio.Future[None]) -> None:
        if self._barrier is fut:
            self._barrier = None
        if fut.done():
            return
        if xmpp is not self._xmpp or not self._online:
            fut.set_exception(Retryable("xmpp disconnected before the server confirmed"))
            return
        iq = xmpp.make_iq_get(ito=self.settings.domain, ifrom=self.settings.jid if xmpp.is_component else None)
        iq.xml.append(ET.Element(q(NS_PING, "ping")))
        self._inflight.add(fut)
        try:
            reply = iq.send(timeout=self.settings.send_timeout)
        except Exception as exc:  # noqa: BLE001
            self._inflight.discard(fut)
            fut.set_exception(Retryable(f"xmpp send failed: {exc}"))
            self._fire_next(xmpp)
            return

        def done(result: asyncio.Future[object]) -> None:
            self._inflight.discard(fut)
            if not fut.done():
                exc = None if result.cancelled() else result.exception()
                if result.cancelled():
                    fut.set_exception(Retryable("xmpp disconnected before the server confirmed"))
                elif exc is None or isinstance(exc, IqError):
                    fut.set_result(None)
                elif isinstance(exc, IqTimeout):
                    hint = (f" (is {self.settings.domain} the server's domain? set server_domain)"
                            if xmpp.is_component else "")
                    fut.set_exception(Retryable(f"xmpp server did not confirm in time{hint}"))
                else:
                    fut.set_exception(Retryable(f"xmpp send failed: {exc}"))
            self._fire_next(xmpp)

        reply.add_done_callback(done)

    def _fire_next(self, xmpp: BaseXMPP) -> None:
        """The barrier that waited for the one in flight leaves now."""
        pending = self._barrier
        if pending is not None and not self._inflight:
            self._fire(self._xmpp or xmpp, pending)  # a stream that died in between fails it there

    def _go_offline(self, reason: str) -> None:
        self._online = False
        self.online_event.clear()
        pending, self._barrier = self._barrier, None
        for fut in [*self._inflight, *([pending] if pending is not None else [])]:
            if not fut.done():
                fut.set_exception(Retryable(f"xmpp disconnected: {reason}"))
        self._inflight.clear()
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(reason)

    def _discard(self, xmpp: BaseXMPP) -> None:
        xmpp.cancel_connection_attempt()
        if xmpp.transport is not None:
            xmpp.abort()
        task = getattr(xmpp, "_run_out_filters", None)
        if task is not None and not task.done():
            task.cancel()

    async def _connect_once(self) -> BaseXMPP:
        loop = asyncio.get_running_loop()
        xmpp = self._factory()
        started: asyncio.Future[None] = loop.create_future()
        lost: asyncio.Future[object] = loop.create_future()

        def fail(reason: object) -> None:
            if not started.done():
                started.set_exception(ConnectionError(str(reason) or "connection failed"))

        def on_start(_: object) -> None:
            if not started.done():
                started.set_result(None)

        def on_disconnected(reason: object) -> None:
            fail(reason or "disconnected during login")
            if xmpp is self._xmpp:
                self._go_offline(str(reason or "connection lost"))

        def on_stream_error(error: object) -> None:
            condition = getattr(error, "get", lambda *_: "")("condition") or "stream error"
            self.last_error = f"stream error: {condition}"
            fail(self.last_error)

        self._carry_over(xmpp)
        xmpp.add_event_handler("session_start", on_start)
        xmpp.add_event_handler("session_resumed", on_start)
        xmpp.add_event_handler("connection_failed", fail)
        xmpp.add_event_handler("disconnected", on_disconnected)
        xmpp.add_event_handler("failed_all_auth", lambda _: fail("authentication failed (check the password)"))
        xmpp.add_event_handler("stream_error", on_stream_error)
        xmpp.connect(self.settings.host, self.settings.port)
        try:
            await asyncio.wait_for(asyncio.shield(started), self.settings.connect_timeout)
        except BaseException:
            self._discard(xmpp)
            raise
        self._lost = lost
        return xmpp

    async def _run(self) -> None:
        while not self._stopping:
            try:
                xmpp = await self._connect_once()
            except (ConnectionError, asyncio.TimeoutError, OSError) as exc:
                self.failures += 1
                self.last_error = str(exc) or type(exc).__name__
                delay = backoff_delay(self.failures, self.settings.reconnect_base, self.settings.reconnect_max)
                log.warning("xmpp %s: connect failed (%s); retry in %.2fs", self.settings.jid, self.last_error, delay)
                await asyncio.sleep(delay)
                continue
            lost = self._lost
            assert lost is not None
            self._xmpp = xmpp
            self._previous = None
            self._restored = None
            self._online = True
            self.failures = 0
            self.connections += 1
            log.info("xmpp %s: online via %s:%s", self.settings.jid, self.settings.host, self.settings.port)
            try:
                self._on_online(xmpp)
            except Exception:  # noqa: BLE001
                log.exception("xmpp %s: on_online failed", self.settings.jid)
            self.online_event.set()
            reason = await lost
            if self._stopping:
                return
            self._xmpp = None
            self._discard(xmpp)
            self._previous = xmpp
            self.failures = 1
            delay = backoff_delay(self.failures, self.settings.reconnect_base, self.settings.reconnect_max)
            log.warning("xmpp %s: connection lost (%s); reconnecting in %.2fs", self.settings.jid, reason, delay)
            await asyncio.sleep(delay)

"""Signal channel (client side) through signal-cli's JSON-RPC daemon (`daemon --tcp`).

The adapter holds one connection, subscribes with `subscribeReceive` (daemon started with
`--receive-mode manual`, so messages wait on the Signal server until the relay is there),
journals each envelope in arrival order, and reconnects with capped exponential backoff and
jitter when the daemon goes away, subscribing again so delivery resumes where it stopped.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import random
from dataclasses import replace
from typing import Any, Mapping

from bots.base import Channel, ChannelContext, Deliver, DeliveryError, Permanent, Retryable
from bots.signal.parse import parse_envelope, pid
from bots.signal.rpc import RpcClosed, RpcConnection, RpcError
from bots.signal.settings import SignalSettings
from bots.webhooks.channel import content_to_send
from bots.webhooks.intake import Item, MediaRef
from bots.webhooks.settings import require_client_side
from relay.model import Attachment, Outgoing

log = logging.getLogger(__name__)

MAX_LINE = 1 << 20
"""A notification line (one envelope, attachments by id) is far smaller than 1 MiB."""
RETRY_TYPES = frozenset({"NETWORK_FAILURE", "RATE_LIMIT_FAILURE"})
RATE_LIMIT_WAIT = 60.0
SEND_MAX_BYTES = 100 * 1000 * 1000
"""Signal refuses attachments over 100 MB."""


def send_failure(results: Any) -> DeliveryError | None:
    """None when signal-cli sent to the recipient, else what the outbox should do."""
    first = results[0] if isinstance(results, list) and results and isinstance(results[0], dict) else {}
    kind = str(first.get("type") or "SUCCESS")
    if kind == "SUCCESS":
        return None
    reason = f"Signal send failed: {kind}"
    if kind == "RATE_LIMIT_FAILURE":
        return Retryable(reason, after=RATE_LIMIT_WAIT)
    if kind in RETRY_TYPES:
        return Retryable(reason)
    return Permanent(reason + {"UNREGISTERED_FAILURE": " (the number is not on Signal)",
                               "IDENTITY_FAILURE": " (the client's safety number changed; trust it in signal-cli)"}.get(kind, ""))


def rpc_failure(exc: RpcError) -> DeliveryError:
    if "RateLimit" in exc.message or exc.code == -5:
        return Retryable(str(exc)[:300], after=RATE_LIMIT_WAIT)
    if exc.code in (-32603, -3):
        return Retryable(str(exc)[:300])
    return Permanent(str(exc)[:300])


class SignalChannel:
    """One signal-cli account, as a client-side channel."""

    def __init__(self, name: str, settings: SignalSettings, ctx: ChannelContext) -> None:
        self.name = name
        self.settings = settings
        self.ctx = ctx
        self._deliver: Deliver | None = None
        self._conn: RpcConnection | None = None
        self._connected = asyncio.Event()
        self._queue: asyncio.Queue[tuple[dict[str, Any], bytes]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._lanes: dict[str, asyncio.Queue[list[Item]]] = {}
        self._lane_tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self.reconnects = 0

    async def start(self, deliver: Deliver) -> None:
        self._deliver = deliver
        self._stopping = False
        self._tasks = [asyncio.create_task(self._connect_loop()), asyncio.create_task(self._work())]

    async def stop(self) -> None:
        self._stopping = True
        tasks = self._tasks + list(self._lane_tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._tasks = []
        self._lanes.clear()
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    # --- the connection --------------------------------------------------------------------

    def _line_limit(self) -> int:
        return max(MAX_LINE, self.ctx.max_attachment_bytes * 4 // 3 + 65536)

    async def _connect_loop(self) -> None:
        delay = 0.2
        while not self._stopping:
            try:
                conn = await RpcConnection.open(self.settings.host, self.settings.port, self._line_limit(), self._on_note)
            except OSError as exc:
                log.warning("%s: signal-cli at %s:%d unreachable (%s); retrying in %.1f s", self.name,
                            self.settings.host, self.settings.port, type(exc).__name__, delay)
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, self.settings.max_backoff)
                continue
            self._conn = conn
            try:
                await conn.call("subscribeReceive", {}, self.settings.timeout)
            except (RpcClosed, RpcError, asyncio.TimeoutError) as exc:
                log.warning("%s: subscribeReceive failed: %s", self.name, type(exc).__name__)
                await conn.close()
                await asyncio.sleep(delay)
                continue
            delay = 0.2
            self._connected.set()
            log.info("%s: connected to signal-cli, receiving", self.name)
            await conn.closed.wait()
            self._connected.clear()
            self.reconnects += 1
            log.warning("%s: signal-cli connection lost; reconnecting", self.name)

    def _on_note(self, doc: dict[str, Any]) -> None:
        if doc.get("method") != "receive":
            return
        params = doc.get("params")
        if isinstance(params, dict):
            self._queue.put_nowait((params, json.dumps(doc, ensure_ascii=False).encode()))

    # --- receiving -------------------------------------------------------------------------

    async def _work(self) -> None:
        """Hand each envelope to its sender's lane: one chat in arrival order, chats side by side
        (so the journal's group commit serves many clients at once)."""
        while True:
            params, raw = await self._queue.get()
            items = parse_envelope(self.name, self.settings.account, params.get("envelope"), raw)
            chat = items[0].inbound.chat
            lane = self._lanes.get(chat)
            if lane is None:
                lane = self._lanes[chat] = asyncio.Queue()
                task = asyncio.create_task(self._lane(chat, lane))
                self._lane_tasks.add(task)
                task.add_done_callback(self._lane_tasks.discard)
            lane.put_nowait(items)

    async def _lane(self, chat: str, lane: asyncio.Queue[list[Item]]) -> None:
        """Journal one chat's envelopes in order; a failing journal is retried, never skipped."""
        while True:
            try:
                items = lane.get_nowait()
            except asyncio.QueueEmpty:
                del self._lanes[chat]
                return
            for item in items:
                delay = 0.1
                while True:
                    try:
                        await self._take(item)
                        break
                    except asyncio.CancelledError:
                        raise
                    except Exception:
                        log.exception("%s: envelope not journaled yet; retrying in %.1f s", self.name, delay)
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, 10.0)

    async def _take(self, item: Item) -> None:
        assert self._deliver is not None
        inbound = item.inbound
        if item.media:
            inbound = replace(inbound, attachments=tuple([await self._fetch(inbound.chat, m) for m in item.media]))
        await self._deliver(inbound)

    async def _fetch(self, source: str, ref: MediaRef) -> Attachment:
        """`getAttachment` by id, refused unread when its declared size is over the limit."""
        limit = self.ctx.max_attachment_bytes
        if ref.declared_size is not None and ref.declared_size > limit:
            return Attachment(ref.name, ref.mime, ref.declared_size, platform_ref=ref.media_id,
                              refused=f"too large: {ref.declared_size} bytes over the {limit}-byte limit (not fetched)")
        if not ref.media_id:
            return Attachment(ref.name, ref.mime, 0, refused="attachment without id")
        try:
            result = await self._call("getAttachment", {"id": ref.media_id, "recipient": source})
        except RpcError as exc:
            return Attachment(ref.name, ref.mime, 0, platform_ref=ref.media_id, refused=f"not fetched: {exc}"[:300])
        encoded = result.get("data") if isinstance(result, dict) else result if isinstance(result, str) else None
        if not isinstance(encoded, str):
            return Attachment(ref.name, ref.mime, 0, platform_ref=ref.media_id, refused="getAttachment gave no data")
        if len(encoded) > limit * 4 // 3 + 4:
            return Attachment(ref.name, ref.mime, len(encoded) * 3 // 4, platform_ref=ref.media_id,
                              refused=f"too large: over the {limit}-byte limit")
        try:
            data = base64.b64decode(encoded, validate=True)
        except ValueError:
            return Attachment(ref.name, ref.mime, 0, platform_ref=ref.media_id, refused="getAttachment data is not base64")
        return Attachment.of(ref.name, ref.mime, data, platform_ref=ref.media_id)

    async def _call(self, method: str, params: dict[str, Any]) -> Any:
        """A request on the live connection; waits (bounded) for a reconnect; RpcClosed raises Retryable."""
        try:
            await asyncio.wait_for(self._connected.wait(), self.settings.timeout)
        except asyncio.TimeoutError:
            raise Retryable("not connected to signal-cli") from None
        conn = self._conn
        if conn is None:
            raise Retryable("not connected to signal-cli")
        try:
            return await conn.call(method, params, self.settings.timeout)
        except RpcClosed as exc:
            raise Retryable(str(exc)) from exc
        except asyncio.TimeoutError as exc:
            raise Retryable(f"signal-cli did not answer {method} within {self.settings.timeout} s") from exc

    # --- sending ---------------------------------------------------------------------------

    @staticmethod
    def _timestamp(platform_id: str | None) -> int | None:
        tail = (platform_id or "").rsplit(":", 1)[-1]
        return int(tail) if tail.isdigit() else None

    async def send(self, out: Outgoing) -> str:
        """Send text and files (or an edit, a remote delete); `<account>:<timestamp>` of the message."""
        to = out.to.user
        if out.kind == "delete":
            target = self._timestamp(out.edits)
            if target is None:
                raise Permanent(f"signal: {out.edits!r} is not a message the relay sent")
            await self._send_call("remoteDelete", {"recipient": [to], "targetTimestamp": target})
            return pid(self.settings.account, target)
        text, files = content_to_send(out) if out.kind != "edit" else (out.text, [a for a in out.attachments if not a.refused])
        if not text and not files:
            raise Permanent("nothing to send: empty text and no attachments")
        params: dict[str, Any] = {"recipient": [to], "message": text}
        big = [a for a in files if len(a.data) > SEND_MAX_BYTES]
        if big:
            raise Permanent(f"{big[0].name}: {len(big[0].data)} bytes is over Signal's {SEND_MAX_BYTES}-byte attachment limit")
        if files:
            params["attachments"] = [f"data:{a.mime or 'application/octet-stream'};filename={a.name};base64,"
                                     + base64.b64encode(a.data).decode() for a in files if a.data]
        if out.kind == "edit":
            target = self._timestamp(out.edits)
            if target is None:
                raise Permanent(f"signal: cannot edit {out.edits!r}")
            params["editTimestamp"] = target
        if out.reply_to:
            author, _, stamp = out.reply_to.rpartition(":")
            if author and stamp.isdigit():
                params["quoteTimestamp"], params["quoteAuthor"] = int(stamp), author
        result = await self._send_call("send", params)
        stamp = result.get("timestamp") if isinstance(result, dict) else None
        if not isinstance(stamp, int):
            raise Retryable("signal-cli accepted the send but returned no timestamp")
        return pid(self.settings.account, stamp)

    async def _send_call(self, method: str, params: dict[str, Any]) -> Any:
        try:
            result = await self._call(method, params)
        except RpcError as exc:
            raise rpc_failure(exc) from exc
        failure = send_failure(result.get("results") if isinstance(result, dict) else None)
        if failure is not None:
            raise failure
        return result


def create(name: str, settings: Mapping[str, Any], ctx: ChannelContext) -> Channel:
    require_client_side(name, "Signal", ctx)
    return SignalChannel(name, SignalSettings.parse(name, settings), ctx)

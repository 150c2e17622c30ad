"""A fake signal-cli JSON-RPC daemon (`signal-cli -a ACCOUNT daemon --tcp HOST:PORT
--receive-mode manual`) on loopback: newline-delimited JSON-RPC 2.0 over TCP.

Methods: `subscribeReceive`, `send` (recipient, message, attachments as data URIs,
editTimestamp, quoteTimestamp/quoteAuthor), `remoteDelete`, `getAttachment`, `version`.
Notifications: `receive` with the envelope shapes signal-cli prints (dataMessage with
attachments, quote, reaction, remoteDelete; editMessage; receiptMessage). Like signal-cli,
it keeps incoming envelopes until a subscribed client has been sent them, so a client that
reconnects after a daemon restart gets what arrived meanwhile. `restart()` drops every
connection and listens again on the same port.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class FakeSignalCli:
    account: str = "+15550001111"
    host: str = "127.0.0.1"
    port: int = 0
    unregistered: set[str] = field(default_factory=set)
    rate_limited: int = 0
    sent: list[dict[str, Any]] = field(default_factory=list)
    deleted: list[dict[str, Any]] = field(default_factory=list)
    attachments: dict[str, bytes] = field(default_factory=dict)
    fetched: list[str] = field(default_factory=list)
    pending: list[dict[str, Any]] = field(default_factory=list)
    subscriptions: int = 0
    answer_delay: float = 0.0
    """Seconds to hold a `send` answer after the message went out (its receipts can go first)."""
    _server: asyncio.Server | None = None
    _clients: list[asyncio.StreamWriter] = field(default_factory=list)
    _subscribed: list[asyncio.StreamWriter] = field(default_factory=list)
    _clock: int = 0

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for w in list(self._clients):
                w.close()
            await self._server.wait_closed()
            self._server = None
        self._clients.clear()
        self._subscribed.clear()

    async def restart(self, down_for: float = 0.0) -> None:
        await self.stop()
        if down_for:
            await asyncio.sleep(down_for)
        await self.start()

    def now(self) -> int:
        self._clock = max(self._clock + 1, int(time.time() * 1000))
        return self._clock

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._clients.append(writer)
        try:
            while line := await reader.readline():
                req = json.loads(line)
                result, error = self._handle(writer, req.get("method"), req.get("params") or {})
                answer: dict[str, Any] = {"jsonrpc": "2.0", "id": req.get("id")}
                answer.update({"error": error} if error else {"result": result})
                if self.answer_delay and req.get("method") == "send":
                    await asyncio.sleep(self.answer_delay)
                writer.write(json.dumps(answer).encode() + b"\n")
                await writer.drain()
                if req.get("method") == "subscribeReceive":
                    await self._flush()
        except (ConnectionError, OSError):
            pass
        finally:
            if writer in self._clients:
                self._clients.remove(writer)
            if writer in self._subscribed:
                self._subscribed.remove(writer)
            writer.close()

    def _handle(self, writer: asyncio.StreamWriter, method: str, params: dict[str, Any]) -> tuple[Any, Any]:
        if method == "version":
            return {"version": "0.13.x-fake"}, None
        if method == "subscribeReceive":
            self._subscribed.append(writer)
            self.subscriptions += 1
            return 0, None
        if method == "getAttachment":
            data = self.attachments.get(str(params.get("id")))
            self.fetched.append(str(params.get("id")))
            if data is None:
                return None, {"code": -1, "message": "Attachment file not found"}
            return {"data": base64.b64encode(data).decode()}, None
        if method in ("send", "remoteDelete"):
            recipients = params.get("recipient") or []
            if not recipients:
                return None, {"code": -32602, "message": "No recipients given"}
            if self.rate_limited > 0:
                self.rate_limited -= 1
                return None, {"code": -5, "message": "Failed to send message due to rate limiting (RateLimitException)"}
            ts = self.now()
            to = recipients[0]
            kind = "UNREGISTERED_FAILURE" if to in self.unregistered else "SUCCESS"
            if kind == "SUCCESS":
                record = {**params, "_timestamp": ts}
                if method == "send":
                    record["_files"] = [self._decode(a) for a in params.get("attachments") or []]
                    self.sent.append(record)
                else:
                    self.deleted.append(record)
            return {"timestamp": ts, "results": [{"recipientAddress": {"number": to, "uuid": None}, "type": kind}]}, None
        return None, {"code": -32601, "message": f"Method not implemented: {method}"}

    @staticmethod
    def _decode(uri: str) -> tuple[str, str, bytes]:
        head, _, data = uri.partition(",")
        parts = head[len("data:"):].split(";")
        name = next((p[len("filename="):] for p in parts if p.startswith("filename=")), "")
        return parts[0], name, base64.b64decode(data)

    # --- the Signal network's side --------------------------------------------------------

    async def push(self, envelope: dict[str, Any]) -> None:
        """An envelope arrives for the account; sent now when a client is subscribed, else kept."""
        self.pending.append(envelope)
        await self._flush()

    async def _flush(self) -> None:
        while self.pending and self._subscribed:
            writer = self._subscribed[0]
            note = {"jsonrpc": "2.0", "method": "receive",
                    "params": {"envelope": self.pending[0], "account": self.account, "subscription": 0}}
            try:
                writer.write(json.dumps(note).encode() + b"\n")
                await writer.drain()
            except (ConnectionError, OSError):
                self._subscribed.remove(writer)
                continue
            self.pending.pop(0)

    def envelope(self, source: str, name: str = "Client", **content: Any) -> dict[str, Any]:
        ts = content.pop("timestamp", None) or self.now()
        return {"source": source, "sourceNumber": source, "sourceUuid": "uuid-" + source[-4:], "sourceName": name,
                "sourceDevice": 1, "timestamp": ts, "serverReceivedTimestamp": ts + 5, **content}

    def text(self, source: str, message: str, *, attachments: list[dict[str, Any]] | None = None,
             quote: dict[str, Any] | None = None, timestamp: int | None = None) -> dict[str, Any]:
        ts = timestamp or self.now()
        data: dict[str, Any] = {"timestamp": ts, "message": message, "expiresInSeconds": 0, "viewOnce": False}
        if attachments:
            data["attachments"] = attachments
        if quote:
            data["quote"] = quote
        return self.envelope(source, timestamp=ts, dataMessage=data)

    def add_attachment(self, data: bytes, content_type: str, filename: str | None, declared: int | None = None) -> dict[str, Any]:
        att_id = secrets.token_hex(10) + ".bin"
        self.attachments[att_id] = data
        return {"contentType": content_type, "filename": filename, "id": att_id,
                "size": len(data) if declared is None else declared}

    def edit(self, source: str, target: int, message: str) -> dict[str, Any]:
        ts = self.now()
        return self.envelope(source, timestamp=ts, editMessage={
            "targetSentTimestamp": target, "dataMessage": {"timestamp": ts, "message": message}})

    def remote_delete(self, source: str, target: int) -> dict[str, Any]:
        ts = self.now()
        return self.envelope(source, timestamp=ts, dataMessage={"timestamp": ts, "remoteDelete": {"timestamp": target}})

    def reaction(self, source: str, emoji: str, author: str, target: int, remove: bool = False) -> dict[str, Any]:
        ts = self.now()
        return self.envelope(source, timestamp=ts, dataMessage={"timestamp": ts, "reaction": {
            "emoji": emoji, "targetAuthor": author, "targetAuthorNumber": author, "targetSentTimestamp": target,
            "isRemove": remove}})

    def receipt(self, source: str, timestamps: list[int], kind: str = "DELIVERY") -> dict[str, Any]:
        ts = self.now()
        return self.envelope(source, timestamp=ts, receiptMessage={
            "when": ts, "isDelivery": kind == "DELIVERY", "isRead": kind == "READ", "isViewed": kind == "VIEWED",
            "timestamps": timestamps})


__all__ = ["FakeSignalCli"]

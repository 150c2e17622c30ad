"""One JSON-RPC 2.0 connection to signal-cli's daemon: newline-delimited JSON over TCP.

Requests get futures resolved by the reader; notifications go to a callback in arrival order.
A line longer than the reader's limit ends the connection (the daemon is trusted, but
bounded), and a dropped connection fails every pending request so a send can be retried.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from typing import Any, Callable

log = logging.getLogger(__name__)


class RpcError(Exception):
    """signal-cli answered a request with a JSON-RPC error."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"signal-cli error {code}: {message}")
        self.code = code
        self.message = message
        self.data = data


class RpcClosed(ConnectionError):
    """The connection to signal-cli ended before the answer came."""


class RpcConnection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 on_notification: Callable[[dict[str, Any]], None]) -> None:
        self._reader = reader
        self._writer = writer
        self._notify = on_notification
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self.closed = asyncio.Event()
        self._task = asyncio.create_task(self._read())

    @staticmethod
    async def open(host: str, port: int, limit: int, on_notification: Callable[[dict[str, Any]], None]) -> RpcConnection:
        reader, writer = await asyncio.open_connection(host, port, limit=limit)
        return RpcConnection(reader, writer, on_notification)

    async def call(self, method: str, params: dict[str, Any], timeout: float) -> Any:
        if self.closed.is_set():
            raise RpcClosed("not connected to signal-cli")
        rid = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        try:
            self._writer.write(json.dumps({"jsonrpc": "2.0", "method": method, "params": params, "id": rid}).encode() + b"\n")
            await self._writer.drain()
            return await asyncio.wait_for(fut, timeout)
        except (ConnectionError, OSError) as exc:
            raise RpcClosed(f"signal-cli connection lost: {type(exc).__name__}") from exc
        finally:
            self._pending.pop(rid, None)

    async def _read(self) -> None:
        try:
            while True:
                line = await self._reader.readline()
                if not line:
                    break
                try:
                    doc = json.loads(line)
                except ValueError:
                    log.warning("signal-cli sent a line that is not JSON (%d bytes); skipped", len(line))
                    continue
                if not isinstance(doc, dict):
                    continue
                if "id" in doc and doc.get("id") is not None and "method" not in doc:
                    fut = self._pending.get(doc["id"]) if isinstance(doc["id"], int) else None
                    if fut is None or fut.done():
                        continue
                    err = doc.get("error")
                    if isinstance(err, dict):
                        fut.set_exception(RpcError(int(err.get("code") or 0), str(err.get("message") or ""), err.get("data")))
                    else:
                        fut.set_result(doc.get("result"))
                elif isinstance(doc.get("method"), str):
                    self._notify(doc)
        except (ConnectionError, OSError, asyncio.LimitOverrunError, ValueError) as exc:
            log.warning("signal-cli connection ended: %s", type(exc).__name__)
        finally:
            self._end()

    def _end(self) -> None:
        self.closed.set()
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(RpcClosed("signal-cli connection lost"))
        self._writer.close()

    async def close(self) -> None:
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self._end()

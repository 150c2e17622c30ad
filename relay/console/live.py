"""New queue items pushed as server-sent events. One poller per relay reads the queue
projection after the newest seq it has seen (the open-items index), however many tabs listen."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp import web

from relay.console.auth import Ctx, guarded
from relay.console.queue import row_html
from relay.console.queue_read import since

log = logging.getLogger("relay.console")
POLL_SECONDS = 0.5
KEEPALIVE_SECONDS = 15.0
MAX_LISTENERS = 200


class Feed:
    def __init__(self, console: Any) -> None:
        self.console = console
        self.listeners: set[asyncio.Queue[list[dict[str, Any]]]] = set()
        self.last_seq = 0
        self._task: asyncio.Task[None] | None = None
        self.closing = False

    async def subscribe(self, after: int) -> asyncio.Queue[list[dict[str, Any]]]:
        """A queue of item batches; `after` (the newest seq the page shows) catches up what came meanwhile."""
        queue: asyncio.Queue[list[dict[str, Any]]] = asyncio.Queue(maxsize=100)
        if self._task is None or self._task.done():
            rows = await self.console.journal.fetchall("SELECT MAX(seq) AS n FROM review_queue WHERE state = 'open'")
            self.last_seq = int(rows[0]["n"] or 0)
        if after and after < self.last_seq:
            missed = await since(self.console, after)
            if missed:
                queue.put_nowait(missed)
        self.listeners.add(queue)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="console-feed")
        return queue

    def unsubscribe(self, queue: asyncio.Queue[list[dict[str, Any]]]) -> None:
        self.listeners.discard(queue)

    async def _run(self) -> None:
        while self.listeners:
            try:
                items = await since(self.console, self.last_seq)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("console feed: reading the queue failed")
                items = []
            if items:
                self.last_seq = max(i["seq"] for i in items)
                for q in list(self.listeners):
                    if q.full():
                        self.listeners.discard(q)  # a stuck tab: it reloads and catches up
                    else:
                        q.put_nowait(items)
            await asyncio.sleep(POLL_SECONDS)

    def close_streams(self) -> None:
        """Shutting down: every open event stream ends now (the browser reconnects to the next relay)."""
        self.closing = True
        for q in list(self.listeners):
            if not q.full():
                q.put_nowait([])

    async def stop(self) -> None:
        self.close_streams()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


@guarded()
async def events(request: web.Request, ctx: Ctx) -> web.StreamResponse:
    feed: Feed = ctx.console.feed
    if len(feed.listeners) >= MAX_LISTENERS:
        return web.json_response({"error": "too many live views open; reload later"}, status=503)
    try:
        after = int(request.headers.get("Last-Event-ID") or request.query.get("after") or 0)
    except ValueError:
        after = 0
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                           "X-Accel-Buffering": "no"})
    await response.prepare(request)
    queue = await feed.subscribe(after)
    try:
        await response.write(b": connected\n\n")
        while True:
            try:
                items = await asyncio.wait_for(queue.get(), KEEPALIVE_SECONDS)
            except asyncio.TimeoutError:
                await response.write(b": keepalive\n\n")
                continue
            if feed.closing:
                break
            for item in items:
                data = json.dumps({"item": item, "html": row_html(item)}, ensure_ascii=False)
                await response.write(f"id: {item['seq']}\nevent: item\ndata: {data}\n\n".encode("utf-8"))
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        feed.unsubscribe(queue)
    return response

"""The compliance console (`/console`): reviewers, supervisors and admins in the browser.

Mounted on the relay's one aiohttp Application by `setup_console`; reads projections, writes
only through the registered admin actions (or an `admin.action` audit event) under the
logged-in reviewer's name."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiohttp import web


STATIC = Path(__file__).with_name("static")
STATIC_TYPES = {".css": "text/css", ".js": "application/javascript"}


async def _static(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    path = STATIC / name
    if "/" in name or name.startswith(".") or path.suffix not in STATIC_TYPES or not path.is_file():
        raise web.HTTPNotFound()
    return web.Response(body=path.read_bytes(), content_type=STATIC_TYPES[path.suffix],
                        headers={"Cache-Control": "no-cache"})


async def _index(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/console/queue")


def setup_console(relay: Any) -> None:
    """Routes under /console and the console's state on the Application."""
    from relay.console import auth, conversation, dashboard, exports, holds, item, live, policies, queue, search
    from relay.console.state import CONSOLE_KEY, Console

    console = Console(relay)
    console.feed = live.Feed(console)
    app = relay.web
    app[CONSOLE_KEY] = console

    async def _prime(_: web.Application) -> None:
        """Read holds and erasure requests once now, not on the first reviewer's request."""
        console.priming = asyncio.get_running_loop().create_task(console.state())

    async def _stop(_: web.Application) -> None:
        await console.stop()
    async def _shutdown(_: web.Application) -> None:
        console.close_streams()
    app.on_startup.append(_prime)
    app.on_shutdown.append(_shutdown)
    app.on_cleanup.append(_stop)
    r = app.router
    r.add_get("/console", _index)
    r.add_get("/console/", _index)
    r.add_get("/console/static/{name}", _static)
    r.add_get("/console/login", auth.get_login)
    r.add_post("/console/login", auth.post_login)
    r.add_post("/console/logout", auth.post_logout)
    r.add_get("/console/queue", queue.queue_page)
    r.add_get("/console/queue/events", live.events)
    r.add_post("/console/bulk", item.bulk)
    r.add_get("/console/item/{mid}", item.item_page)
    r.add_post("/console/item/{mid}/decide", item.decide)
    r.add_post("/console/item/{mid}/reveal", item.reveal)
    for module in (search, conversation, holds, exports, dashboard, policies):
        module.add_routes(r)

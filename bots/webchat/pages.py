"""Serving the two pages and their assets from bots/webchat/static, no CDN, strict CSP."""

from __future__ import annotations

import re
from pathlib import Path

from aiohttp import web

from bots.base import ChannelConfigError

STATIC = Path(__file__).resolve().parent / "static"
_PREFIX = re.compile(r"^(/[A-Za-z0-9._~-]+)+$")
_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data: blob:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def check_prefix(channel: str, value: object, app: web.Application) -> str:
    """A valid `path` setting that no other channel's routes already use."""
    if not isinstance(value, str) or not _PREFIX.match(value.rstrip("/") or "/"):
        raise ChannelConfigError(f"channel {channel}: `path` must look like /chat (got {value!r})")
    prefix = value.rstrip("/")
    for resource in app.router.resources():
        used = resource.canonical
        if used == prefix or used.startswith(prefix + "/"):
            raise ChannelConfigError(f"channel {channel}: path {prefix} is already used by another route")
    return prefix


def _asset(name: str, prefix: str) -> web.Response:
    path = STATIC / name
    body = path.read_bytes()
    if path.suffix == ".html":
        body = body.replace(b"__PREFIX__", prefix.encode())
    return web.Response(body=body, content_type=_TYPES[path.suffix], charset="utf-8", headers=_HEADERS)


def add_page_routes(app: web.Application, prefix: str, page: str, assets: tuple[str, ...]) -> None:
    async def serve_page(request: web.Request) -> web.Response:
        return _asset(page, prefix)

    async def serve_asset(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in assets:
            raise web.HTTPNotFound()
        return _asset(name, prefix)

    async def slash(request: web.Request) -> web.Response:
        raise web.HTTPFound(prefix)

    app.router.add_get(prefix, serve_page)
    app.router.add_get(prefix + "/", slash)
    app.router.add_get(prefix + "/static/{name}", serve_asset)

"""Webhook bodies are bounded by each network's own limit before they are read.

An unsigned 20 MB post must get 413 on its Content-Length alone (the test never sends the
body, so a server that waited to read it would time out), and a chunked one as soon as it
passes the limit, with the connection closed; a body within the limit is still handled.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from aiohttp import web

from bots.telegram import create as create_telegram
from bots.webhooks.body import TELEGRAM_MAX_BODY, WECHAT_MAX_BODY, WHATSAPP_MAX_BODY
from bots.wechat import create as create_wechat
from bots.whatsapp import create as create_whatsapp
from fake_telegram import SECRET_HEADER, FakeTelegram
from telegram_support import CLIENT_TOKEN, MemoryState, eventually, make_ctx
from telegram_support import Recorder as TelegramRecorder
from tests.fake_graph import FakeGraph
from tests.fake_wechat import FakeWeChat
from tests.webhook_support import Host, Recorder

APP_MAX_SIZE = 26 * 1024 * 1024 + 1024 * 1024
"""What relay.app gives aiohttp (max_attachment_bytes + 1 MiB): the limit must come from the channel."""
HUGE = 20 * 1000 * 1000
TG_SECRET = "s3cret-Token_1"


@dataclass
class Target:
    network: str
    port: int
    path: str
    limit: int
    headers: dict[str, str]
    journaled: list


async def _whatsapp() -> AsyncIterator[Target]:
    graph = FakeGraph()
    await graph.start()
    host = Host()
    host.app = web.Application(client_max_size=APP_MAX_SIZE)
    settings = {"phone_number_id": graph.phone_number_id, "access_token": graph.access_token,
                "app_secret": graph.app_secret, "verify_token": "v", "graph_url": graph.url, "timeout": 2}
    channel = create_whatsapp("wa", settings, host.ctx("wa"))
    await host.start()
    hub = Recorder()
    await channel.start(hub)
    yield Target("WhatsApp", int(host.url.rsplit(":", 1)[1]), "/webhooks/wa", WHATSAPP_MAX_BODY,
                 {"Content-Type": "application/json", "X-Hub-Signature-256": "sha256=" + "0" * 64}, hub.journal)
    await channel.stop()
    await host.stop()
    await graph.stop()


async def _wechat() -> AsyncIterator[Target]:
    fake = FakeWeChat()
    await fake.start()
    host = Host()
    host.app = web.Application(client_max_size=APP_MAX_SIZE)
    settings = {"app_id": fake.app_id, "app_secret": fake.app_secret, "token": fake.token, "api_url": fake.url,
                "timeout": 2}
    channel = create_wechat("wx", settings, host.ctx("wx"))
    await host.start()
    hub = Recorder()
    await channel.start(hub)
    yield Target("WeChat", int(host.url.rsplit(":", 1)[1]), "/webhooks/wx?signature=x&timestamp=1&nonce=2",
                 WECHAT_MAX_BODY, {"Content-Type": "text/xml"}, hub.journal)
    await channel.stop()
    await host.stop()
    await fake.stop()


async def _telegram() -> AsyncIterator[Target]:
    fake = FakeTelegram()
    await fake.start()
    fake.add_bot(CLIENT_TOKEN, "relay_client_bot")
    app = web.Application(client_max_size=APP_MAX_SIZE)
    ctx = make_ctx("telegram-clients", "client", MemoryState(), app=app)
    settings = {"token": CLIENT_TOKEN, "side": "client", "mode": "webhook", "webhook_secret": TG_SECRET,
                "base_url": fake.base_url, "base_file_url": fake.base_file_url}
    channel = create_telegram("telegram-clients", settings, ctx)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # noqa: SLF001
    ctx.public_url = f"http://127.0.0.1:{port}"
    rec = TelegramRecorder()
    await channel.start(rec)
    await eventually(lambda: fake.bots[CLIENT_TOKEN].webhook_url)
    yield Target("Telegram", port, "/telegram/telegram-clients", TELEGRAM_MAX_BODY,
                 {"Content-Type": "application/json", SECRET_HEADER: TG_SECRET}, rec.inbounds)
    await channel.stop()
    await runner.cleanup()
    await fake.stop()


@pytest.fixture(params=["whatsapp", "wechat", "telegram"])
async def target(request: pytest.FixtureRequest) -> AsyncIterator[Target]:
    make = {"whatsapp": _whatsapp, "wechat": _wechat, "telegram": _telegram}[request.param]
    async for t in make():
        yield t


def _head(t: Target, extra: str) -> bytes:
    lines = [f"POST {t.path} HTTP/1.1", f"Host: 127.0.0.1:{t.port}", *(f"{k}: {v}" for k, v in t.headers.items()),
             extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _read_answer(reader: asyncio.StreamReader) -> tuple[int, list[str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    status_line, *headers = head.decode().rstrip("\r\n").split("\r\n")
    length = next(int(h.split(":", 1)[1]) for h in headers if h.lower().startswith("content-length"))
    body = await asyncio.wait_for(reader.readexactly(length), 5)
    return int(status_line.split()[1]), [h.lower() for h in headers], body


async def test_declared_oversize_body_is_refused_before_it_is_sent(target: Target) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", target.port)
    writer.write(_head(target, f"Content-Length: {HUGE}"))
    await writer.drain()
    status, headers, body = await _read_answer(reader)
    assert status == 413
    assert "connection: close" in headers
    assert f"{target.network} webhooks are at most {target.limit} bytes".encode() in body
    writer.close()
    assert target.journaled == []


async def test_chunked_body_is_refused_once_past_the_limit(target: Target) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", target.port)
    writer.write(_head(target, "Transfer-Encoding: chunked"))
    piece = b"x" * (16 * 1024)
    chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    answer = asyncio.ensure_future(_read_answer(reader))
    sent = 0
    try:
        while sent < HUGE and not answer.done():
            writer.write(chunk)
            sent += len(piece)
            await asyncio.wait_for(writer.drain(), 5)
            await asyncio.sleep(0)
    except (ConnectionError, asyncio.TimeoutError):
        pass
    status, headers, body = await answer
    assert status == 413, body
    assert sent < target.limit + 2 * 1024 * 1024, f"answered only after {sent} bytes"
    assert b"refused unread" in body
    stalled = False
    try:
        for _ in range(4096):
            writer.write(chunk)
            await asyncio.wait_for(writer.drain(), 1.0)
    except (asyncio.TimeoutError, ConnectionError):
        stalled = True
    assert stalled, "the server kept reading a refused body"
    writer.close()
    assert target.journaled == []


async def test_body_within_the_limit_is_still_read(target: Target) -> None:
    """An unsigned body just under the limit reaches the signature check (401/400, not 413)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", target.port)
    body = b"{" + b" " * (target.limit - 2) + b"}"
    writer.write(_head(target, f"Content-Length: {len(body)}") + body)
    await writer.drain()
    status, _, _ = await _read_answer(reader)
    assert status in (400, 401)
    writer.close()

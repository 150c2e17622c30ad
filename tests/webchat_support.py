"""Test harness for the web chat and desk: a real aiohttp server on 127.0.0.1 with both channels.

`Recorder` stands in for the hub's deliver (records Inbounds, dedupes like the journal,
can be told to fail or to wait); it is a harness, not a copy of relay code.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bots.base import ChannelContext, EmployeeInfo
from bots.webchat.client import WebChatChannel
from bots.webchat.client import create as create_chat
from bots.webchat.desk import WebDeskChannel
from bots.webchat.desk import create as create_desk
from relay.model import Inbound, Receipt
from relay.passwords import hash_password
from tests.channel_support import MemoryState  # noqa: F401  (re-exported for the tests)

ALICE_PASSWORD = "alice-secret"
BOB_PASSWORD = "bob-secret"
_HASHES: dict[str, str] = {}


def password_hash(password: str) -> str:
    if password not in _HASHES:
        _HASHES[password] = hash_password(password)
    return _HASHES[password]


class Recorder:
    """deliver(): records each Inbound; the same (channel, platform_id) twice is a duplicate."""

    def __init__(self) -> None:
        self.inbounds: list[Inbound] = []
        self.receipts: list[Receipt] = []
        self.fail: Exception | None = None
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()
        self._seen: dict[tuple[str, str], str] = {}

    async def __call__(self, inbound: Inbound) -> Receipt:
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        self.inbounds.append(inbound)
        key = (inbound.channel, inbound.platform_id)
        duplicate = key in self._seen
        message_id = self._seen.setdefault(key, f"m-{len(self._seen) + 1}")
        receipt = Receipt(message_id=message_id, conversation=f"c-{inbound.chat}", duplicate=duplicate)
        self.receipts.append(receipt)
        return receipt


@dataclass
class Harness:
    base: str
    chat: WebChatChannel
    desk: WebDeskChannel
    recorder: Recorder
    wakes: list[tuple[str, str]]
    data_dir: Path
    runner: web.AppRunner
    sessions: list[aiohttp.ClientSession] = field(default_factory=list)

    def session(self) -> aiohttp.ClientSession:
        s = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        self.sessions.append(s)
        return s

    def ws_url(self, path: str) -> str:
        return self.base.replace("http://", "ws://") + path

    async def visitor(self, visitor: str, name: str = "Vera Visitor") -> aiohttp.ClientWebSocketResponse:
        ws = await self.session().ws_connect(self.ws_url(f"/chat/ws?visitor={visitor}&name={name}"))
        return ws

    async def login(self, employee: str = "alice", password: str = ALICE_PASSWORD) -> aiohttp.ClientSession:
        s = self.session()
        async with s.post(self.base + "/desk/login", data={"employee": employee, "password": password}) as r:
            assert r.status == 200, await r.text()
        return s

    async def close(self) -> None:
        for s in self.sessions:
            await s.close()
        await self.chat.stop()
        await self.desk.stop()
        await self.runner.cleanup()


async def start_harness(data_dir: Path, *, max_bytes: int = 1024 * 1024,
                        chat_settings: dict[str, Any] | None = None,
                        desk_settings: dict[str, Any] | None = None) -> Harness:
    app = web.Application()
    wakes: list[tuple[str, str]] = []
    employees = {
        "alice": EmployeeInfo(id="alice", name="Alice Adams", address="alice", password_hash=password_hash(ALICE_PASSWORD)),
        "bob": EmployeeInfo(id="bob", name="Bob Brown", address="bob", password_hash=password_hash(BOB_PASSWORD)),
        "carl": EmployeeInfo(id="carl", name="Carl Gone", address="carl", password_hash=password_hash(BOB_PASSWORD),
                             active=False),
    }

    def context(name: str, side: str, employees_: dict[str, EmployeeInfo]) -> ChannelContext:
        return ChannelContext(name=name, side=side, state=MemoryState(), app=app, data_dir=str(data_dir),
                              max_attachment_bytes=max_bytes, wake=lambda addr: wakes.append((name, addr)),
                              employees=employees_)

    chat = create_chat("webchat", {"network": "webchat", "side": "client", **(chat_settings or {})},
                       context("webchat", "client", {}))
    desk = create_desk("webdesk", {"network": "webdesk", "side": "staff", **(desk_settings or {})},
                       context("webdesk", "staff", employees))
    recorder = Recorder()
    await chat.start(recorder)
    await desk.start(recorder)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return Harness(f"http://127.0.0.1:{port}", chat, desk, recorder, wakes, data_dir, runner)


async def next_frame(ws: aiohttp.ClientWebSocketResponse, timeout: float = 5.0) -> dict[str, Any]:
    msg = await ws.receive(timeout=timeout)
    assert msg.type == aiohttp.WSMsgType.TEXT, msg
    return json.loads(msg.data)


async def frame_of_type(ws: aiohttp.ClientWebSocketResponse, kind: str) -> dict[str, Any]:
    """The next frame of `kind`, skipping others (e.g. the welcome notice)."""
    while True:
        frame = await next_frame(ws)
        if frame["type"] == kind:
            return frame


async def until(predicate: Any, timeout: float = 5.0) -> None:
    """Wait for a condition the server brings about asynchronously (e.g. wake after connect)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        if loop.time() > end:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.01)

"""Shared set-up for end-to-end tests: a config in a temp dir and real WebSocket clients."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp

from relay.app import RelayApp

ROOT = Path(__file__).resolve().parents[1]
_HASHES: dict[str, str] = {}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "relay.cli", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


async def start_relay(cfg_path: Path, base: str, log: Path) -> subprocess.Popen[bytes]:
    """`relay run` as a subprocess (output appended to `log`), once `base`/healthz answers 200."""
    proc = subprocess.Popen(_cli("run", "--config", str(cfg_path)),
                            cwd=ROOT, env=_env(), stdout=log.open("ab"), stderr=subprocess.STDOUT)
    async with aiohttp.ClientSession() as session:
        for _ in range(300):
            if proc.poll() is not None:
                raise AssertionError(f"relay exited with {proc.returncode}: {log.read_text()[-2000:]}")
            try:
                async with session.get(f"{base}/healthz") as resp:
                    if resp.status == 200:
                        return proc
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    proc.kill()
    raise AssertionError("relay did not start: " + log.read_text()[-2000:])


def stop_relay(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it has not exited within 15 s."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()


def verify_journal(cfg_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_cli("journal", "verify", "--config", str(cfg_path)),
                          cwd=ROOT, env=_env(), capture_output=True, text=True)


def password_hash(pw: str) -> str:
    from relay.passwords import hash_password

    if pw not in _HASHES:
        _HASHES[pw] = hash_password(pw)
    return _HASHES[pw]


def web_config(data_dir: Path, *, members: tuple[str, ...] = ("alice",), welcome: str | None = None,
               policies: Path | None = None, port: int = 0, **extra: Any) -> dict[str, Any]:
    client: dict[str, Any] = {"network": "webchat", "side": "client"}
    if welcome:
        client["welcome"] = welcome
    cfg: dict[str, Any] = {
        "data_dir": str(data_dir),
        "listen": {"host": "127.0.0.1", "port": port},
        "policies": {"dir": str(policies or ROOT / "policies"), "reload_seconds": 0.2},
        "journal": {"checkpoint_seconds": 3600},
        "outbox": {"base_delay": 0.05, "max_delay": 0.5},
        "channels": {"webchat": client, "webdesk": {"network": "webdesk", "side": "staff"}},
        "employees": {
            name: {"name": name.title(), "password_hash": password_hash(f"{name}-pw"),
                   "staff": {"channel": "webdesk", "address": name}, "groups": ["advisors"]}
            for name in ("alice", "bob")
        },
        "desks": {"advisors": {"clients": ["webchat"], "members": list(members)}},
    }
    cfg.update(extra)
    return cfg


@asynccontextmanager
async def running(cfg: dict[str, Any]) -> AsyncIterator[RelayApp]:
    relay = await RelayApp.start(cfg)
    try:
        yield relay
    finally:
        await relay.stop()


class Socket:
    """A WebSocket peer that collects pushed frames and waits for the ones a test expects."""

    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.session = session
        self.ws = ws
        self.frames: list[dict[str, Any]] = []
        self.close_reason = ""
        self._new = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while True:
            msg = await self.ws.receive()
            if msg.type == aiohttp.WSMsgType.TEXT:
                self.frames.append(json.loads(msg.data))
                self._new.set()
            elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED,
                              aiohttp.WSMsgType.ERROR):
                if msg.type == aiohttp.WSMsgType.CLOSE:
                    self.close_reason = str(msg.extra or "")
                return

    async def closed_by_server(self, timeout: float = 10.0) -> tuple[int | None, str]:
        """Wait until the server closes the socket; its close code and reason."""
        await asyncio.wait_for(asyncio.shield(self._reader), timeout)
        return self.ws.close_code, self.close_reason

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ws.send_str(json.dumps(frame))

    async def wait_for(self, pred: Any, timeout: float = 10.0) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        seen = 0
        while True:
            for f in self.frames[seen:]:
                if pred(f):
                    return f
            seen = len(self.frames)
            left = deadline - loop.time()
            if left <= 0:
                raise AssertionError(f"no matching frame within {timeout}s; got {self.frames[-10:]}")
            self._new.clear()
            try:
                await asyncio.wait_for(self._new.wait(), left)
            except asyncio.TimeoutError:
                pass

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [f for f in self.frames if f.get("type") == kind]

    async def say(self, mid: str, text: str, **more: Any) -> dict[str, Any]:
        await self.send({"type": "message", "id": mid, "text": text, **more})
        return await self.wait_for(lambda f: f.get("type") in ("ack", "error") and f.get("id") == mid)

    async def reply(self, conversation: str, mid: str, text: str) -> dict[str, Any]:
        await self.send({"type": "reply", "conversation": conversation, "id": mid, "text": text})
        return await self.wait_for(lambda f: f.get("type") in ("ack", "error") and f.get("id") == mid)

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        await self.session.close()


async def client_socket(base: str, visitor: str, name: str = "Client") -> Socket:
    session = aiohttp.ClientSession()
    ws = await session.ws_connect(f"{base}/chat/ws", params={"visitor": visitor, "name": name})
    return Socket(session, ws)


async def desk_socket(base: str, employee: str, password: str | None = None) -> Socket:
    session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    async with session.post(f"{base}/desk/login", data={"employee": employee,
                                                          "password": password or f"{employee}-pw"}) as resp:
        assert resp.status in (200, 302, 303), await resp.text()
    ws = await session.ws_connect(f"{base}/desk/ws")
    return Socket(session, ws)

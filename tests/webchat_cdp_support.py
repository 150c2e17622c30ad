"""Headless Chromium driven over the Chrome DevTools Protocol with aiohttp (no extra dependency).

Used by the browser tests of the chat and desk pages: a real browser runs the pages' JavaScript
against a real relay on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
import tempfile
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--disable-default-apps", "--mute-audio", "--remote-debugging-port=0"]


class CDPError(RuntimeError):
    """A DevTools command failed or the page threw."""


class Browser:
    """One DevTools connection; commands are matched to answers by id, events are dropped."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            future = self._waiting.pop(data.get("id", -1), None)
            if future is not None and not future.done():
                future.set_result(data)
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(CDPError("DevTools connection closed"))

    async def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None,
                   timeout: float = 15.0) -> dict[str, Any]:
        command_id = next(self._ids)
        message: dict[str, Any] = {"id": command_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[command_id] = future
        await self.ws.send_str(json.dumps(message))
        answer = await asyncio.wait_for(future, timeout)
        if "error" in answer:
            raise CDPError(f"{method}: {answer['error']}")
        return answer.get("result", {})

    async def new_page(self) -> "Page":
        """A tab in its own browser context (own cookies and localStorage)."""
        context = (await self.call("Target.createBrowserContext"))["browserContextId"]
        target = (await self.call("Target.createTarget", {"url": "about:blank", "browserContextId": context}))["targetId"]
        session = (await self.call("Target.attachToTarget", {"targetId": target, "flatten": True}))["sessionId"]
        page = Page(self, session)
        await page.call("Page.enable")
        await page.call("Runtime.enable")
        return page

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()


class Page:
    """A tab: navigate, evaluate JavaScript, type, wait for a condition in the page."""

    def __init__(self, browser: Browser, session: str) -> None:
        self.browser = browser
        self.session = session

    async def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self.browser.call(method, params, self.session)

    async def evaluate(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                                      "returnByValue": True})
        if "exceptionDetails" in result:
            raise CDPError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def goto(self, url: str) -> None:
        await self.call("Page.navigate", {"url": url})
        await self.wait_for("document.readyState === 'complete' && location.href !== 'about:blank'")

    async def wait_for(self, expression: str, timeout: float = 15.0) -> Any:
        """Poll `expression` until it is truthy; its value (True for a DOM node) is returned."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        probe = f"(() => {{ const v = ({expression}); return v instanceof Node ? true : v; }})()"
        while True:
            value = await self.evaluate(probe)
            if value:
                return value
            if loop.time() > end:
                body = await self.evaluate("document.body ? document.body.innerText : ''")
                raise AssertionError(f"page never satisfied {expression!r}; page text:\n{body}")
            await asyncio.sleep(0.05)

    async def type_into(self, element_id: str, text: str) -> None:
        """Focus the element and type as a user would (input events fire)."""
        await self.evaluate(f"document.getElementById({json.dumps(element_id)}).focus()")
        await self.call("Input.insertText", {"text": text})

    async def click(self, element_id: str) -> None:
        await self.evaluate(f"document.getElementById({json.dumps(element_id)}).click()")


async def _devtools_port(profile: Path, proc: asyncio.subprocess.Process) -> tuple[int, str]:
    marker = profile / "DevToolsActivePort"
    for _ in range(600):
        if marker.exists():
            lines = marker.read_text().split()
            if len(lines) >= 2:
                return int(lines[0]), lines[1]
        if proc.returncode is not None:
            raise CDPError(f"chromium exited with {proc.returncode} before DevTools was ready")
        await asyncio.sleep(0.05)
    raise CDPError("chromium did not write DevToolsActivePort within 30 s")


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """Start headless Chromium with a throw-away profile; stop it (this process only) afterwards."""
    profile = Path(tempfile.mkdtemp(prefix="relay-chromium-"))
    proc = await asyncio.create_subprocess_exec(
        CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    session = aiohttp.ClientSession()
    browser: Browser | None = None
    try:
        port, path = await _devtools_port(profile, proc)
        ws = await session.ws_connect(f"ws://127.0.0.1:{port}{path}", max_msg_size=64 * 1024 * 1024)
        browser = Browser(ws)
        yield browser
    finally:
        if browser is not None:
            try:
                await browser.call("Browser.close", timeout=5)
            except (CDPError, asyncio.TimeoutError, ConnectionError):
                pass
            await browser.close()
        await session.close()
        if proc.returncode is None:
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()
        shutil.rmtree(profile, ignore_errors=True)

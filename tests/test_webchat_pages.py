"""The chat and desk pages in headless Chromium against the channels (deliver recorded by the harness)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import AsyncIterator

import pytest

from relay.model import Outgoing, Party
from tests.webchat_cdp_support import CHROMIUM, Browser, chromium
from tests.webchat_support import Harness, start_harness, until


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    harness = await start_harness(tmp_path)
    yield harness
    await harness.close()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    assert os.access(CHROMIUM, os.X_OK), f"{CHROMIUM} is missing; .ci/run installs it"
    async with chromium() as b:
        yield b


async def test_chat_page_sends_receives_and_shows_edits(h: Harness, browser: Browser) -> None:
    page = await browser.new_page()
    await page.goto(h.base + "/chat")
    await page.wait_for("document.getElementById('status').textContent === 'connected'")
    await page.type_into("name", "Vera")
    await page.evaluate("document.getElementById('name').dispatchEvent(new Event('change'))")
    await until(lambda: any(addr for ch, addr in h.wakes if ch == "webchat") and len(h.wakes) >= 2)
    await page.wait_for("document.getElementById('status').textContent === 'connected'")
    await page.type_into("text", "Hello, I need help <b>now</b>")
    await page.click("send")
    await page.wait_for("document.querySelector('.msg.me .state')?.textContent === 'sent'")
    [inbound] = h.recorder.inbounds
    visitor = await page.evaluate("localStorage.getItem('relay.visitor')")
    assert inbound.chat == visitor and inbound.sender.display == "Vera"
    assert inbound.text == "Hello, I need help <b>now</b>"
    assert await page.evaluate("document.querySelector('.msg.me .body').textContent") == inbound.text
    assert await page.evaluate("document.querySelectorAll('.msg.me b').length") == 0

    to = Party("webchat", visitor, "Vera")
    await h.chat.send(Outgoing("c-1", to, "Hi Vera, Alice here.", "m-9", origin=Party("webdesk", "alice", "Alice")))
    await page.wait_for("document.querySelector('.msg.them[data-id=\"m-9\"]')")
    assert await page.evaluate("document.querySelector('.msg.them .meta').textContent") == "Alice"
    await h.chat.send(Outgoing("c-1", to, "Hi Vera, Alice from Example Bank.", "m-10", kind="edit", edits="m-9"))
    await page.wait_for("document.querySelector('.msg.them[data-id=\"m-9\"] .body').textContent"
                        ".includes('Example Bank. (edited)')")
    await h.chat.send(Outgoing("c-1", to, "Your message was not delivered.", "n-1", kind="notice"))
    await page.wait_for("document.querySelector('.msg.notice[data-id=\"n-1\"]')")

    await page.goto(h.base + "/chat")
    await page.wait_for("document.querySelectorAll('.msg').length === 3")


async def test_desk_page_login_conversation_and_reply(h: Harness, browser: Browser) -> None:
    page = await browser.new_page()
    await page.goto(h.base + "/desk")
    await page.wait_for("!document.getElementById('login').classList.contains('hidden')")
    await page.type_into("login-employee", "alice")
    await page.type_into("login-password", "not-her-password")
    await page.click("login-submit")
    assert await page.wait_for("document.getElementById('login-error').textContent") == "wrong employee or password"
    assert await page.evaluate("document.cookie") == ""

    await page.evaluate("document.getElementById('login-password').value = ''")
    await page.type_into("login-password", "alice-secret")
    await page.click("login-submit")
    await page.wait_for("document.getElementById('status').textContent === 'connected'")
    assert await page.evaluate("document.cookie") == "", "the session cookie must be HttpOnly"
    await until(lambda: ("webdesk", "alice") in h.wakes)

    await h.desk.send(Outgoing("c-77", Party("webdesk", "alice", "Alice"), "card [REDACTED] please", "m-1",
                               origin=Party("webchat", "v1", "Vera"), client=Party("webchat", "v1", "Vera"),
                               action="redact", rules=("PII-001",)))
    await page.wait_for("document.querySelector('.conv[data-conversation=\"c-77\"]')")
    assert "Vera" in await page.evaluate("document.querySelector('.conv .who').textContent")
    await page.wait_for("document.querySelector('.msg.them[data-id=\"m-1\"]')")
    meta = await page.evaluate("document.querySelector('.msg.them .meta').textContent")
    assert "redact" in meta and "PII-001" in meta

    await page.type_into("reply-text", "Please do not send card numbers here.")
    await page.click("reply-send")
    await page.wait_for("document.querySelector('.msg.me .state')?.textContent.startsWith('sent')")
    [reply] = h.recorder.inbounds
    assert (reply.channel, reply.chat, reply.sender.user, reply.text) == (
        "webdesk", "c-77", "alice", "Please do not send card numbers here.")
    assert json.loads(reply.raw)["type"] == "reply"

    await page.click("logout")
    await page.wait_for("!document.getElementById('login').classList.contains('hidden')")
    assert await page.evaluate("localStorage.getItem('relay.desk.alice')") is None

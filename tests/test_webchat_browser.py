"""End to end in a real browser: a client on /chat, Alice on /desk, the relay with the shipped policies between."""

from __future__ import annotations

import os
from pathlib import Path

from relay.admin import run_action_async
from relay.config import config_from_dict
from tests.e2e_support import running, web_config
from tests.webchat_cdp_support import CHROMIUM, chromium

RECORDING = "This conversation is recorded for regulatory purposes."


async def test_client_and_desk_pages_through_the_relay(tmp_path: Path) -> None:
    assert os.access(CHROMIUM, os.X_OK), f"{CHROMIUM} is missing; .ci/run installs it"
    cfg = web_config(tmp_path / "data")
    async with running(cfg) as relay, chromium() as browser:
        client = await browser.new_page()
        await client.goto(relay.base_url + "/chat")
        await client.wait_for("document.getElementById('status').textContent === 'connected'")
        await client.type_into("name", "Vera")
        await client.evaluate("document.getElementById('name').dispatchEvent(new Event('change'))")
        await client.wait_for("document.getElementById('status').textContent === 'connected'")
        await client.type_into("text", "My card is 4111 1111 1111 1111, can you check the last payment?")
        await client.click("send")
        await client.wait_for("document.querySelector('.msg.me .state')?.textContent === 'sent'")

        desk = await browser.new_page()
        await desk.goto(relay.base_url + "/desk")
        await desk.wait_for("!document.getElementById('login').classList.contains('hidden')")
        await desk.type_into("login-employee", "alice")
        await desk.type_into("login-password", "alice-pw")
        await desk.click("login-submit")
        await desk.wait_for("document.querySelector('.msg.them .body')")
        shown = await desk.evaluate("document.querySelector('.msg.them .body').textContent")
        assert "[REDACTED]" in shown and "4111" not in shown and "last payment" in shown
        assert "redact" in await desk.evaluate("document.querySelector('.msg.them .meta').textContent")
        assert "Vera" in await desk.evaluate("document.querySelector('.conv .who').textContent")

        await desk.type_into("reply-text", "Thank you, Vera. Please never send card numbers here; I am checking it.")
        await desk.click("reply-send")
        await desk.wait_for("document.querySelector('.msg.me .state')?.textContent.startsWith('sent')")

        await client.wait_for("[...document.querySelectorAll('.msg.them .body')]"
                              ".some(e => e.textContent.includes('I am checking it'))")
        reply = await client.evaluate("[...document.querySelectorAll('.msg.them')]"
                                      ".find(e => e.textContent.includes('I am checking it')).textContent")
        assert RECORDING in reply
        assert "Alice" in reply

        rows = await relay.journal.fetchall("SELECT text FROM messages WHERE direction = 'inbound'")
        assert "4111 1111 1111 1111" in rows[0]["text"]

        # Deactivation closes the open desk at once: the page says why and keeps no copy.
        assert await desk.evaluate("localStorage.getItem('relay.desk.alice') !== null")
        await run_action_async(config_from_dict(cfg), "employee.deactivate", {"employee": "alice", "actor": "erin"})
        await desk.wait_for("!document.getElementById('login').classList.contains('hidden')")
        assert "access was withdrawn" in await desk.evaluate("document.getElementById('login-error').textContent")
        assert await desk.evaluate("localStorage.getItem('relay.desk.alice') === null")

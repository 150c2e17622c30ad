"""In a real browser: the desk remembers. After logging out and in again, and in a second browser
profile, the history is there (older messages paged on scroll), as the client received it; and the
client's held message is shown to them as held."""

from __future__ import annotations

import os
from pathlib import Path

from relay.admin import run_action_async
from relay.config import config_from_dict
from tests.e2e_support import client_socket, running, web_config
from tests.webchat_cdp_support import CHROMIUM, Page, chromium

BODIES = "[...document.querySelectorAll('#messages .msg')].map(e => e.textContent).join('\\n')"


async def log_in(desk: Page, base: str, employee: str = "alice") -> None:
    await desk.goto(base + "/desk")
    await desk.wait_for("!document.getElementById('login').classList.contains('hidden')")
    await desk.type_into("login-employee", employee)
    await desk.type_into("login-password", f"{employee}-pw")
    await desk.click("login-submit")
    await desk.wait_for("!document.getElementById('desk').classList.contains('hidden')")


async def sees_the_whole_history(desk: Page) -> None:
    """The newest page on login; the older ones on scrolling up, as the client received them."""
    await desk.wait_for("document.querySelectorAll('#messages .msg').length === 30")
    assert "filler 34" in await desk.evaluate(BODIES)
    assert "4111" not in await desk.evaluate(BODIES)
    await desk.evaluate("(() => { const b = document.getElementById('messages'); b.scrollTop = 0;"
                        " b.dispatchEvent(new Event('scroll')); })()")
    await desk.wait_for("document.querySelectorAll('#messages .msg').length === 38")
    text = await desk.evaluate(BODIES)
    assert "4111" not in text and "filler 0" in text
    card = await desk.evaluate("[...document.querySelectorAll('.msg.them')].find(e => e.textContent.includes('last payment')).textContent")
    assert "[REDACTED]" in card and "redact" in card
    held = await desk.evaluate("document.querySelector('.msg.them.held').textContent")
    assert "[held for compliance review]" in held and "guaranteed" not in held and "quarantine" in held
    mine = await desk.evaluate("document.querySelector('.msg.me').textContent")
    assert "[REDACTED]" in mine and "redact" in mine and "PII" in mine and "delivered" in mine


async def test_the_desk_remembers_across_logins_and_browser_profiles(tmp_path: Path) -> None:
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
        await client.type_into("text", "Your fund has a guaranteed return, right?")
        await client.click("send")
        await client.wait_for("document.querySelector('.msg.me.held .state')")
        held = await client.evaluate("document.querySelector('.msg.me.held').textContent")
        assert "held for review" in held and "held for a compliance review" in held and "sent" not in held

        desk = await browser.new_page()
        await log_in(desk, relay.base_url)
        await desk.wait_for("document.querySelector('.msg.them .body')?.textContent.includes('last payment')")
        await desk.type_into("reply-text", "Was it 4111 1111 1111 1111? Please never send card numbers here.")
        await desk.click("reply-send")
        await desk.wait_for("document.querySelector('.msg.me .state')?.textContent.startsWith('sent')")
        await desk.wait_for("document.querySelector('.msg.me .body').textContent.includes('[REDACTED]')")
        await client.wait_for("[...document.querySelectorAll('.msg.them')].some(e => e.textContent.includes('never send'))")

        visitor = await client.evaluate("localStorage.getItem('relay.visitor')")
        same_client = await client_socket(relay.base_url, visitor, "Vera")
        for i in range(35):
            assert (await same_client.say(f"f{i}", f"filler {i}"))["type"] == "ack"
        await same_client.close()
        await desk.wait_for("document.querySelector('.msg.them:last-child')?.textContent.includes('filler 34')")

        await desk.click("logout")
        await desk.wait_for("!document.getElementById('login').classList.contains('hidden')")
        assert await desk.evaluate("localStorage.getItem('relay.desk.alice')") is None
        await log_in(desk, relay.base_url)
        await sees_the_whole_history(desk)

        other_profile = await browser.new_page()
        await log_in(other_profile, relay.base_url)
        await sees_the_whole_history(other_profile)
        assert "Vera" in await other_profile.evaluate("document.querySelector('.conv .who').textContent")

        bob = await browser.new_page()  # open while the conversation is handed to him
        await log_in(bob, relay.base_url, "bob")
        assert await bob.evaluate("document.querySelectorAll('.conv').length") == 0
        await run_action_async(config_from_dict(cfg), "handover", {"employee": "alice", "to": "bob", "actor": "erin"})
        await bob.wait_for("document.querySelector('.conv .who')?.textContent.includes('Vera')")
        await bob.wait_for("[...document.querySelectorAll('#messages .msg.them')].some(e => e.textContent.includes('filler 34'))")
        await bob.evaluate("(() => { const b = document.getElementById('messages'); b.scrollTop = 0;"
                           " b.dispatchEvent(new Event('scroll')); })()")
        await bob.wait_for("[...document.querySelectorAll('#messages .msg.staff')]"
                           ".some(e => e.textContent.includes('never send card numbers'))")
        assert await bob.evaluate("document.querySelectorAll('.conv').length") == 1


async def test_a_release_and_a_handover_show_at_once_on_the_open_pages(tmp_path: Path) -> None:
    """Released: the client's page says sent, the desk shows the text. Handed over: the previous
    employee's open desk marks the conversation read-only; the new desk has one marker line and
    the history, not a text dump of it."""
    assert os.access(CHROMIUM, os.X_OK), f"{CHROMIUM} is missing; .ci/run installs it"
    cfg = web_config(tmp_path / "data")
    async with running(cfg) as relay, chromium() as browser:
        client = await browser.new_page()
        await client.goto(relay.base_url + "/chat")
        await client.wait_for("document.getElementById('status').textContent === 'connected'")
        await client.type_into("text", "Your fund has a guaranteed return, right?")
        await client.click("send")
        await client.wait_for("document.querySelector('.msg.me.held .state')")
        alice = await browser.new_page()
        await log_in(alice, relay.base_url)
        await alice.wait_for("document.querySelector('.msg.them.held')?.textContent.includes('[held for compliance review]')")

        [row] = await relay.journal.fetchall("SELECT message_id FROM review_queue WHERE state = 'open'")
        await run_action_async(config_from_dict(cfg), "review.release",
                               {"message_id": row["message_id"], "actor": "carol", "reason": "a question"})
        await client.wait_for("document.querySelector('.msg.me.released .state')?.textContent.startsWith('sent')")
        shown = await client.evaluate("document.querySelector('.msg.me').textContent")
        assert "cleared by the compliance review" in shown and "held for review" not in shown
        await alice.wait_for("document.querySelector('.msg.them .body')?.textContent.includes('guaranteed return')")
        assert await alice.evaluate("document.querySelectorAll('.msg.them.held').length") == 0

        bob = await browser.new_page()
        await log_in(bob, relay.base_url, "bob")
        await run_action_async(config_from_dict(cfg), "handover", {"employee": "alice", "to": "bob", "actor": "erin"})
        await alice.wait_for("document.querySelector('.conv.handed .sub')?.textContent.includes('handed over to Bob')")
        assert "read-only" in await alice.evaluate("document.querySelector('.msg.notice.handed').textContent")
        await alice.type_into("reply-text", "Still there?")
        await alice.click("reply-send")
        assert "read-only" in await alice.evaluate("document.getElementById('error').textContent")
        assert await alice.evaluate("document.querySelectorAll('.msg.me').length") == 0

        await bob.wait_for("document.querySelector('#messages .msg.marker')?.textContent === 'Handed over from Alice'")
        await bob.wait_for("[...document.querySelectorAll('#messages .msg.them')].some(e => e.textContent.includes('guaranteed return'))")
        text = await bob.evaluate(BODIES)
        assert "Handover:" not in text and "Last " not in text
        assert await bob.evaluate("document.querySelectorAll('#messages .msg.marker').length") == 1

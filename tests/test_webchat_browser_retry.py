"""In a real browser: "(click to retry)" is offered only where sending again can succeed."""

from __future__ import annotations

from pathlib import Path

from tests.e2e_support import running, web_config
from tests.webchat_cdp_support import chromium


async def test_a_message_the_server_will_always_refuse_offers_no_retry(tmp_path: Path) -> None:
    async with running(web_config(tmp_path / "data")) as relay, chromium() as browser:
        client = await browser.new_page()
        await client.goto(relay.base_url + "/chat")
        await client.wait_for("document.getElementById('status').textContent === 'connected'")
        await client.type_into("text", "y" * 70_000)
        await client.click("send")
        await client.wait_for("document.querySelector('.msg.me .state')?.textContent.startsWith('not sent')")
        state = await client.evaluate("document.querySelector('.msg.me .state').textContent")
        assert "longer than 65536 characters" in state
        assert "click to retry" not in state
        await client.evaluate("document.querySelector('.msg.me .state').click()")
        assert await client.evaluate("document.querySelector('.msg.me .state').textContent") == state
        rows = await relay.journal.fetchall("SELECT COUNT(*) AS n FROM messages")
        assert rows[0]["n"] == 0

"""The HTML transcript shows each delivery for what it was: a blocked message's rejection notice
is not the message being delivered, and a redacted or disclaimed message shows what the
recipient received beside the original."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

from relay.evidence import ExportFilter, write_export
from relay.evidence.keys import load_private_key
from tests.e2e_support import client_socket, desk_socket, running, web_config

POLICY = """\
schema: relay-policy/v1
policy: {id: t, version: 1}
rules:
  - id: B-1
    title: Forbidden topic
    severity: high
    match: {keywords: [forbidden]}
    action: block
    tests: [{text: "a forbidden word", expect: block}]
  - id: P-1
    title: Card number
    severity: high
    match: {detector: credit_card}
    action: redact
    tests: [{text: "card 4111 1111 1111 1111", expect: redact}]
  - id: R-1
    title: Recording notice
    scope: {direction: [outbound], first_in_conversation: true}
    action: disclaimer
    text: "This chat is recorded."
"""


def row_with(html: str, text: str) -> str:
    (row,) = [r for r in re.findall(r"<tr id='m\d+'.*?</tr>", html, re.S) if text in r.split("<td>", 4)[-1].split("</td>")[0]]
    return row


async def test_the_transcript_shows_the_rejection_notice_and_the_text_received(tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "t.yaml").write_text(POLICY)
    async with running(web_config(tmp_path / "data", policies=policies)) as relay:
        desk = await desk_socket(relay.base_url, "alice")
        client = await client_socket(relay.base_url, "v-1", "Vera")
        assert (await client.say("c1", "my card 4111 1111 1111 1111 please"))["type"] == "ack"
        got = await desk.wait_for(lambda f: f.get("type") == "message" and "please" in f.get("text", ""))
        assert (await client.say("c2", "let us discuss the forbidden deal"))["type"] == "ack"
        await client.wait_for(lambda f: f.get("type") == "notice")
        assert (await desk.reply(got["conversation"], "r1", "Hello Vera"))["type"] == "ack"
        await client.wait_for(lambda f: f.get("type") == "message" and "Hello Vera" in f.get("text", ""))
        deadline = time.monotonic() + 10
        while len(await relay.journal.fetchall("SELECT 1 FROM events WHERE kind = 'message.delivered'")) < 3:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        out = tmp_path / "export"
        await write_export(relay.journal, out, ExportFilter(), load_private_key(tmp_path / "data" / "keys" / "journal_ed25519"),
                           formats=("html",))
        await client.close()
        await desk.close()
    (page,) = (out / "transcripts").glob("*.html")
    html = page.read_text(encoding="utf-8")

    blocked = row_with(html, "let us discuss the")
    assert "v-block" in blocked and "delivered to webchat at" not in blocked
    assert "<b>not this message</b>: a rejection notice was delivered to webchat (v-1)" in blocked
    assert "Your message was not delivered because it breaches our communication policy." in blocked

    redacted = row_with(html, "please")
    assert "delivered to webdesk (alice)" in redacted
    assert "as received: <div class='text received'>my card [REDACTED] please</div>" in redacted

    reply = row_with(html, "Hello Vera")
    assert "delivered to webchat (v-1)" in reply
    assert re.search(r"as received: <div class='text received'>This chat is recorded\.\s+Hello Vera</div>", reply)

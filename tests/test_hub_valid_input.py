"""Whatever network it came from, an inbound is made valid at the hub before it is journaled."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from relay.model import Attachment, Inbound, Party
from relay.valid_input import valid_id, valid_inbound, valid_text
from tests.test_hub_pipeline import start, until


def test_valid_text_and_ids() -> None:
    assert valid_text("a\ud800b\udfffc") == "a\ufffdb\ufffdc"
    assert valid_text("Grüße 你好 😀") == "Grüße 你好 😀"
    assert valid_id("chat\ud800") != valid_id("chat\ud801")
    assert valid_id("chat\ud800").encode("utf-8") == b"chat\\ud800"
    ok = Inbound(channel="c", platform_id="p", sender=Party("c", "u", "Ünïcode"), chat="x", text="fine 😀")
    assert valid_inbound(ok) is ok


async def test_invalid_fields_of_any_channel_are_made_valid_and_the_raw_kept(tmp_path: Path) -> None:
    relay, _clients, staff = await start(tmp_path)
    try:
        raw = b'{"text":"card \\ud800","chat":"x\\ud800"}'
        receipts = []
        for n, chat in enumerate(("x\ud800", "x\ud801")):
            inbound = Inbound(channel="clients", platform_id=f"p\udc80{n}", sender=Party("clients", chat, "Eve\ud800"),
                              chat=chat, text="card \ud800 please", sent_at=float("nan"), raw=raw,
                              attachments=(Attachment.of("bad\udfff.txt", "text/plain", b"file bytes"),))
            receipts.append(await relay.hub.receive(inbound))
        assert receipts[0].conversation != receipts[1].conversation  # two chats stay two conversations
        await until(lambda: len([o for o in staff.sent if o.kind == "message"]) == 2)
        assert {o.text for o in staff.sent if o.kind == "message"} == {"card \ufffd please"}
        rows = await relay.journal.fetchall(
            "SELECT body_json FROM events WHERE kind = 'message.received' ORDER BY seq")
        bodies = [json.loads(r["body_json"]) for r in rows]
        assert [b["text"] for b in bodies] == ["card \ufffd please"] * 2
        assert bodies[0]["sender"]["display"] == "Eve\ufffd" and bodies[0]["sent_at"] is None
        assert bodies[0]["attachments"][0]["name"] == "bad\ufffd.txt"
        assert bodies[0]["chat"] == "x\\ud800" and bodies[1]["chat"] == "x\\ud801"
        assert base64.b64decode(bodies[0]["raw_inline"]) == raw
        assert (await relay.journal.verify()).ok
    finally:
        await relay.stop()

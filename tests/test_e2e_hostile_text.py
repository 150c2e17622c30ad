"""One sender's invalid text never fails anyone else's message, over real web chat sockets."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

from tests.e2e_support import Socket, client_socket, running, web_config

BAD_FRAME = '{"type":"message","id":"%s","text":"card 4111 1111 1111 1111 \\ud800 end"}'
"""A lone surrogate is valid JSON (RFC 8259 allows the escape) but not Unicode text."""


async def _honest(sock: Socket, n: int) -> list[dict[str, object]]:
    return [await sock.say(f"h{i}", f"honest message {i} from {id(sock)}") for i in range(n)]


async def _hostile(sock: Socket, n: int) -> list[dict[str, object]]:
    replies = []
    for i in range(n):
        await sock.ws.send_str(BAD_FRAME % f"b{i}")
        replies.append(await sock.wait_for(lambda f, i=i: f.get("id") == f"b{i}" and f.get("type") in ("ack", "error")))
    return replies


async def test_lone_surrogates_never_fail_other_clients_messages(tmp_path: Path) -> None:
    async with running(web_config(tmp_path / "data")) as relay:
        honest = [await client_socket(relay.base_url, f"honest{i}") for i in range(6)]
        hostile = [await client_socket(relay.base_url, f"hostile{i}") for i in range(4)]
        try:
            results = await asyncio.gather(*(_honest(s, 25) for s in honest), *(_hostile(s, 25) for s in hostile))
        finally:
            for s in honest + hostile:
                await s.close()
        honest_replies = [r for rs in results[: len(honest)] for r in rs]
        assert [r["type"] for r in honest_replies] == ["ack"] * 150
        # the hostile frames are journaled too, made valid: U+FFFD in the text, the frame as received as raw
        assert all(r["type"] == "ack" for rs in results[len(honest):] for r in rs)
        rows = await relay.journal.fetchall(
            "SELECT sender_user, text FROM messages WHERE direction = 'inbound' AND kind = 'message'")
        by_sender: dict[str, list[str]] = {}
        for row in rows:
            by_sender.setdefault(row["sender_user"], []).append(row["text"])
        for i in range(6):
            assert len(by_sender[f"honest{i}"]) == 25
        for i in range(4):
            assert by_sender[f"hostile{i}"] == ["card 4111 1111 1111 1111 \ufffd end"] * 25
        [event] = await relay.journal.fetchall(
            "SELECT body_json FROM events WHERE kind = 'message.received'"
            " AND json_extract(body_json, '$.platform_id') = 'hostile0:b0'")
        body = json.loads(event["body_json"])
        assert base64.b64decode(body["raw_inline"]) == (BAD_FRAME % "b0").encode()
        assert (await relay.journal.verify()).ok


async def test_a_lone_surrogate_in_a_frame_id_is_acked_and_the_socket_stays_open(tmp_path: Path) -> None:
    async with running(web_config(tmp_path / "data")) as relay:
        client = await client_socket(relay.base_url, "v9")
        try:
            await client.ws.send_str('{"type":"message","id":"x\\ud800","text":"hello"}')
            ack = await client.wait_for(lambda f: f.get("type") in ("ack", "error"))
            assert ack == {"type": "ack", "id": "x\ud800"}  # the id as sent, so the page can match it
            assert (await client.say("next", "still here"))["type"] == "ack"
        finally:
            await client.close()
        rows = await relay.journal.fetchall("SELECT platform_id FROM messages WHERE sender_user = 'v9' ORDER BY seq")
        assert [r["platform_id"] for r in rows] == ["v9:x\\ud800", "v9:next"]

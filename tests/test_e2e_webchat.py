"""End to end over real WebSockets against a running relay: client ↔ desk with policies applied."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp

from relay.admin import run_action_async
from relay.config import config_from_dict
from tests.e2e_support import client_socket, desk_socket, running, web_config

RECORDING = "This conversation is recorded for regulatory purposes."


async def test_client_card_number_reaches_desk_redacted_and_journal_keeps_original(tmp_path: Path) -> None:
    async with running(web_config(tmp_path / "data")) as relay:
        desk = await desk_socket(relay.base_url, "alice")
        client = await client_socket(relay.base_url, "v1", "Vera")
        ack = await client.say("c1", "my card is 4111 1111 1111 1111, please pay")
        assert ack["type"] == "ack"
        got = await desk.wait_for(lambda f: f.get("type") == "message" and "pay" in f.get("text", ""))
        assert "4111" not in got["text"] and "[REDACTED]" in got["text"]
        assert got["verdict"]["action"] == "redact" and got["verdict"]["rules"]
        assert got["from"]["name"] == "Vera"
        rows = await relay.journal.fetchall("SELECT text FROM messages WHERE direction = 'inbound'")
        assert rows[0]["text"] == "my card is 4111 1111 1111 1111, please pay"
        await client.close()
        await desk.close()


async def test_desk_reply_gets_recording_notice_on_first_message_only(tmp_path: Path) -> None:
    async with running(web_config(tmp_path / "data")) as relay:
        desk = await desk_socket(relay.base_url, "alice")
        client = await client_socket(relay.base_url, "v2", "Walt")
        await client.say("c1", "hello")
        first = await desk.wait_for(lambda f: f.get("type") == "message")
        conv = first["conversation"]
        assert (await desk.reply(conv, "r1", "Good morning, Walt."))["type"] == "ack"
        assert (await desk.reply(conv, "r2", "How can I help?"))["type"] == "ack"
        m1 = await client.wait_for(lambda f: f.get("type") == "message" and "Good morning" in f["text"])
        m2 = await client.wait_for(lambda f: f.get("type") == "message" and "How can I help" in f["text"])
        assert m1["text"].startswith(RECORDING)
        assert RECORDING not in m2["text"]
        assert m1["from"] == "Alice"
        await client.close()
        await desk.close()


async def test_quarantine_holds_until_release_through_the_admin_api(tmp_path: Path) -> None:
    cfg = web_config(tmp_path / "data")
    async with running(cfg) as relay:
        desk = await desk_socket(relay.base_url, "alice")
        client = await client_socket(relay.base_url, "v3", "Xena")
        await client.say("c1", "this fund has a guaranteed return of 20%")
        await client.say("c2", "and something harmless")
        await desk.wait_for(lambda f: f.get("type") == "message" and "harmless" in f["text"])
        assert not [f for f in desk.of_type("message") if "guaranteed" in f["text"]]
        queue = await relay.journal.fetchall("SELECT message_id, state, action FROM review_queue")
        held = [r for r in queue if r["action"] == "quarantine"]
        assert len(held) == 1 and held[0]["state"] == "open"
        result = await run_action_async(config_from_dict(cfg), "review.release",
                                        {"message_id": held[0]["message_id"], "actor": "carol", "reason": "checked"})
        assert result["decision"] == "release"
        got = await desk.wait_for(lambda f: f.get("type") == "message" and "guaranteed" in f["text"])
        assert got["verdict"]["action"] == "quarantine"
        state = await relay.journal.fetchall("SELECT state FROM review_queue WHERE message_id = ?",
                                             (held[0]["message_id"],))
        assert state[0]["state"] != "open"
        await client.close()
        await desk.close()


async def test_blocked_attachment_gets_a_notice_and_is_never_delivered(tmp_path: Path) -> None:
    async with running(web_config(tmp_path / "data")) as relay:
        desk = await desk_socket(relay.base_url, "alice")
        client = await client_socket(relay.base_url, "v4", "Yuri")
        form = aiohttp.FormData()
        form.add_field("file", b"MZ\x90\x00fake", filename="setup.exe", content_type="application/octet-stream")
        async with client.session.post(f"{relay.base_url}/chat/upload", params={"visitor": "v4"}, data=form) as resp:
            assert resp.status == 200
            upload = (await resp.json())["upload"]
        ack = await client.say("c1", "here is the installer", attachments=[upload])
        assert ack["type"] == "ack"
        notice = await client.wait_for(lambda f: f.get("type") == "notice")
        assert "not delivered" in notice["text"]
        await client.say("c2", "plain text after")
        await desk.wait_for(lambda f: f.get("type") == "message" and "plain text after" in f["text"])
        assert not [f for f in desk.of_type("message") if "installer" in f["text"]]
        verdicts = await relay.journal.fetchall("SELECT action FROM messages WHERE text = 'here is the installer'")
        assert verdicts[0]["action"] == "block"
        await client.close()
        await desk.close()


async def test_repeated_client_id_is_acked_again_but_delivered_once(tmp_path: Path) -> None:
    async with running(web_config(tmp_path / "data")) as relay:
        desk = await desk_socket(relay.base_url, "alice")
        client = await client_socket(relay.base_url, "v5", "Zed")
        assert (await client.say("same", "only once please"))["type"] == "ack"
        client.frames.clear()
        assert (await client.say("same", "only once please"))["type"] == "ack"
        await client.say("next", "marker")
        await desk.wait_for(lambda f: f.get("type") == "message" and f["text"] == "marker")
        assert len([f for f in desk.of_type("message") if f["text"] == "only once please"]) == 1
        rows = await relay.journal.fetchall("SELECT COUNT(*) AS n FROM events WHERE kind = 'message.received'")
        assert rows[0]["n"] == 2
        await client.close()
        await desk.close()


async def test_desk_offline_backlog_is_pushed_on_login_in_order(tmp_path: Path) -> None:
    async with running(web_config(tmp_path / "data")) as relay:
        client = await client_socket(relay.base_url, "v6", "Olga")
        for i in range(20):
            assert (await client.say(f"b{i}", f"backlog {i}"))["type"] == "ack"
        desk = await desk_socket(relay.base_url, "alice")
        await desk.wait_for(lambda f: f.get("type") == "message" and f["text"] == "backlog 19")
        texts = [f["text"] for f in desk.of_type("message")]
        assert texts == [f"backlog {i}" for i in range(20)]
        await client.close()
        await desk.close()


async def test_welcome_carries_the_recording_notice(tmp_path: Path) -> None:
    async with running(web_config(tmp_path / "data", welcome="Welcome to Example Bank.")) as relay:
        client = await client_socket(relay.base_url, "v7", "Pia")
        await client.say("c1", "hi")
        notice = await client.wait_for(lambda f: f.get("type") in ("notice", "message") and "Welcome" in f["text"])
        assert notice["text"].startswith(RECORDING)
        await client.close()


async def test_health_and_metrics(tmp_path: Path) -> None:
    async with running(web_config(tmp_path / "data")) as relay:
        client = await client_socket(relay.base_url, "v8", "Quin")
        await client.say("c1", "count me")
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{relay.base_url}/healthz") as r:
                health = await r.json()
            async with s.get(f"{relay.base_url}/metrics") as r:
                text = await r.text()
        assert health["ok"] is True and set(health["channels"]) == {"webchat", "webdesk"}
        assert "relay_messages_received_total 1" in text
        await client.close()


async def test_admin_api_refuses_a_wrong_token(tmp_path: Path) -> None:
    async with running(web_config(tmp_path / "data")) as relay:
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{relay.base_url}/admin/api/review.release", json={},
                              headers={"Authorization": "Bearer nope"}) as r:
                assert r.status == 401
                assert "token" in json.dumps(await r.json())


async def test_a_deactivated_employee_can_no_longer_use_the_desk(tmp_path: Path) -> None:
    cfg = web_config(tmp_path / "data", members=("alice", "bob"))
    async with running(cfg) as relay:
        desk = await desk_socket(relay.base_url, "alice")
        await run_action_async(config_from_dict(cfg), "employee.deactivate", {"employee": "alice", "actor": "erin"})
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
            async with s.post(f"{relay.base_url}/desk/login", data={"employee": "alice", "password": "alice-pw"}) as r:
                assert r.status == 401
            async with s.post(f"{relay.base_url}/desk/login", data={"employee": "bob", "password": "bob-pw"}) as r:
                assert r.status in (200, 302, 303)
        async with desk.session.get(f"{relay.base_url}/desk/session") as r:
            assert r.status == 401
        await desk.close()

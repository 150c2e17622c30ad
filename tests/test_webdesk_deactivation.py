"""Deactivating an employee ends their open desk sessions at once, not at their next reload.

Over the real aiohttp server and real WebSocket clients, through the admin API as
`relay employee deactivate` uses it: every open desk socket of the employee is closed with
4403 and a reason the desk page shows, their cookies stop working (also after reactivation),
colleagues stay connected, and a reply that races the deactivation is journaled and refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bots.webchat.desk import DEACTIVATED_CLOSE_CODE
from relay.admin import run_action_async
from relay.app import RelayApp
from relay.config import config_from_dict
from tests.e2e_support import Socket, client_socket, desk_socket, running, web_config


async def _status(session: aiohttp.ClientSession, url: str) -> int:
    async with session.get(url) as r:
        return r.status


async def _action(cfg: dict[str, Any], name: str, employee: str) -> dict[str, Any]:
    return await run_action_async(config_from_dict(cfg), name, {"employee": employee, "actor": "erin"})


async def _conversation_with_alice(relay: RelayApp, alice: Socket) -> tuple[Socket, str]:
    client = await client_socket(relay.base_url, "v1", "Vera")
    assert (await client.say("c1", "hello, anyone there?"))["type"] == "ack"
    got = await alice.wait_for(lambda f: f.get("type") == "message" and "anyone there" in f.get("text", ""))
    return client, got["conversation"]


async def test_deactivation_closes_every_open_desk_socket_and_reactivation_needs_a_fresh_login(tmp_path: Path) -> None:
    cfg = web_config(tmp_path / "data", members=("alice", "bob"))
    async with running(cfg) as relay:
        tab1 = await desk_socket(relay.base_url, "alice")
        tab2 = await desk_socket(relay.base_url, "alice")
        bob = await desk_socket(relay.base_url, "bob")
        client, conv = await _conversation_with_alice(relay, tab1)

        out = await _action(cfg, "employee.deactivate", "alice")
        assert out["desk_sockets_closed"] == 2
        for tab in (tab1, tab2):
            code, reason = await tab.closed_by_server()
            assert code == DEACTIVATED_CLOSE_CODE == 4403
            assert "deactivated" in reason
        assert [m["employee"] for m in out["moved"]] == ["bob"]
        await bob.wait_for(lambda f: "Handover" in f.get("text", "") and conv in f.get("text", ""))
        assert not bob.ws.closed

        desk = f"{relay.base_url}/desk"
        assert await _status(tab1.session, f"{desk}/session") == 401
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await tab1.session.ws_connect(f"{desk}/ws")
        assert refused.value.status == 401
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{desk}/login", data={"employee": "alice", "password": "alice-pw"}) as r:
                assert r.status == 401

        await _action(cfg, "employee.activate", "alice")
        assert await _status(tab2.session, f"{desk}/session") == 401, "an old session must not come back"
        fresh = await desk_socket(relay.base_url, "alice")
        assert await _status(fresh.session, f"{desk}/session") == 200
        assert not fresh.ws.closed
        for s in (fresh, bob, client, tab1, tab2):
            await s.close()


async def test_a_reply_racing_the_deactivation_is_journaled_and_refused(tmp_path: Path) -> None:
    cfg = web_config(tmp_path / "data", members=("alice", "bob"))
    async with running(cfg) as relay:
        alice = await desk_socket(relay.base_url, "alice")
        client, conv = await _conversation_with_alice(relay, alice)
        # The deactivation is recorded before the sockets close: a reply in between reaches the hub.
        await relay.router.set_active("alice", False, "erin")
        assert (await alice.reply(conv, "r-late", "one more thing"))["type"] == "ack"
        notice = await alice.wait_for(lambda f: f.get("type") == "notice" and "deactivated" in f.get("text", ""))
        assert "employee alice is deactivated" in notice["text"]
        rows = await relay.journal.fetchall("SELECT body_json FROM events WHERE kind = 'message.received'")
        late = [b for b in map(json.loads, (r["body_json"] for r in rows)) if b["platform_id"] == "alice:r-late"]
        assert len(late) == 1 and late[0]["refused"] == "employee alice is deactivated"
        queued = await relay.journal.fetchall(
            "SELECT d.channel FROM deliveries d JOIN messages m ON m.id = d.message_id WHERE m.platform_id = ?",
            ("alice:r-late",))
        assert [r["channel"] for r in queued] == ["webdesk"], "only the refusal notice, nothing to the client"
        assert not [f for f in client.frames if "one more thing" in f.get("text", "")]

        await _action(cfg, "employee.deactivate", "alice")
        assert (await alice.closed_by_server())[0] == DEACTIVATED_CLOSE_CODE
        await client.close()
        await alice.close()

"""Over real WebSockets against a running relay: what the open pages are told when a reviewer
releases a held message (its sender sees it sent, the desk sees its text) and when a conversation
is handed over (the previous employee's open desk marks it at once; the new one gets a marker
naming whom it came from, its history coming from the server)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from relay.admin import run_action_async
from relay.config import config_from_dict
from tests.e2e_support import Socket, client_socket, desk_socket, running, web_config

HOLD = "this fund has a guaranteed return of 20%"
_ids = itertools.count(1)


async def ask(sock: Socket, frame: dict[str, Any]) -> dict[str, Any]:
    fid = f"q{next(_ids)}"
    await sock.send({**frame, "id": fid})
    return await sock.wait_for(lambda f: f.get("id") == fid and f.get("type") in (frame["type"], "error"))


async def test_a_release_tells_the_sender_and_brings_the_message_to_the_desk(tmp_path: Path) -> None:
    cfg = web_config(tmp_path / "data")
    async with running(cfg) as relay:
        client = await client_socket(relay.base_url, "v1", "Yuri")
        assert (await client.say("c1", HOLD))["type"] == "ack"
        await client.wait_for(lambda f: f.get("type") == "notice" and f.get("about") == "held")
        desk = await desk_socket(relay.base_url, "alice")
        [conv] = (await ask(desk, {"type": "conversations"}))["conversations"]
        cid = conv["conversation"]
        [entry] = (await ask(desk, {"type": "history", "conversation": cid}))["messages"]
        assert entry["state"] == "held" and entry["text"] == ""

        await run_action_async(config_from_dict(cfg), "review.release",
                               {"message_id": entry["message"], "actor": "carol", "reason": "fact, not a promise"})
        told = await client.wait_for(lambda f: f.get("type") == "notice" and f.get("about") == "released")
        assert told["answers"] == "c1" and "cleared by the compliance review" in told["text"]
        pushed = await desk.wait_for(lambda f: f.get("type") == "message" and f.get("id") == entry["message"])
        assert pushed["text"] == HOLD and pushed["verdict"]["action"] == "quarantine"

        ack = await desk.reply(cid, "r1", "Yes, a guaranteed return.")  # the employee's own reply, held
        assert ack["message"]["state"] == "held"
        await desk.wait_for(lambda f: f.get("type") == "notice" and f.get("answers") == "r1" and f["about"] == "held")
        assert not [f for f in client.frames if "guaranteed return." in str(f)]
        await run_action_async(config_from_dict(cfg), "review.release",
                               {"message_id": ack["message"]["message"], "actor": "carol", "reason": "ok"})
        mine = await desk.wait_for(lambda f: f.get("type") == "notice" and f.get("answers") == "r1"
                                   and f.get("about") == "released")
        assert mine["conversation"] == cid
        got = await client.wait_for(lambda f: f.get("type") == "message" and "guaranteed return." in f.get("text", ""))
        assert got["from"] == "Alice"
        await client.close()
        await desk.close()


async def test_a_silent_hold_is_released_silently(tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "quiet.yaml").write_text(
        "schema: relay-policy/v1\npolicy: {id: quiet, version: 1}\nrules:\n"
        "  - id: Q-001\n    title: Tip-off risk\n    match: {keywords: [merger]}\n    action: quarantine\n"
        "    silent: true\n    tests:\n      - {text: \"the merger\", expect: quarantine}\n")
    cfg = web_config(tmp_path / "data", policies=policies)
    async with running(cfg) as relay:
        desk = await desk_socket(relay.base_url, "alice")
        client = await client_socket(relay.base_url, "v2", "Zed")
        assert (await client.say("c1", "what about the merger"))["type"] == "ack"
        rows = await relay.journal.fetchall("SELECT id FROM messages WHERE text = 'what about the merger'")
        await run_action_async(config_from_dict(cfg), "review.release",
                               {"message_id": rows[0]["id"], "actor": "carol", "reason": "harmless"})
        await desk.wait_for(lambda f: f.get("type") == "message" and f.get("text") == "what about the merger")
        assert (await client.say("c2", "marker"))["type"] == "ack"
        await desk.wait_for(lambda f: f.get("type") == "message" and f.get("text") == "marker")
        assert client.of_type("notice") == []
        await client.close()
        await desk.close()


async def test_a_handover_withdraws_the_conversation_from_the_open_desk_and_marks_it_on_the_new(
        tmp_path: Path) -> None:
    cfg = web_config(tmp_path / "data", members=("alice",))
    async with running(cfg) as relay:
        client = await client_socket(relay.base_url, "v3", "Olga")
        assert (await client.say("c1", "hello, about my pension"))["type"] == "ack"
        alice = await desk_socket(relay.base_url, "alice")
        bob = await desk_socket(relay.base_url, "bob")
        [conv] = (await ask(alice, {"type": "conversations"}))["conversations"]
        cid = conv["conversation"]

        await run_action_async(config_from_dict(cfg), "handover", {"employee": "alice", "to": "bob", "actor": "erin"})
        gone = await alice.wait_for(lambda f: f.get("type") == "handed_over")
        assert gone == {"type": "handed_over", "conversation": cid, "to": {"name": "Bob"}}
        marker = await bob.wait_for(lambda f: f.get("type") == "notice" and f.get("conversation") == cid)
        assert marker["about"] == "handover" and marker["from"] == {"name": "Alice", "channel": "webdesk"}
        assert not [f for f in bob.frames if f.get("type") == "handed_over"]
        asked, told = (await ask(bob, {"type": "history", "conversation": cid}))["messages"]
        assert (asked["who"], asked["text"]) == ("them", "hello, about my pension")
        assert told["who"] == "staff" and "handed over to a colleague" in told["text"]  # what the client was told
        for sock in (client, alice, bob):
            await sock.close()

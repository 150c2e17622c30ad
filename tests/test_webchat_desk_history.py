"""The desk's history over real WebSockets against a running relay: what an employee's desk loads on
login (`conversations` and `history` frames), paged and bounded, only their own conversations, as the
client received it; and what a client is told about a held or rejected message."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import aiohttp

from relay.admin import run_action_async
from relay.compliance.holds import request_erasure
from relay.compliance.restricted import RESTRICTED_NOTE
from relay.config import config_from_dict
from tests.e2e_support import Socket, client_socket, desk_socket, running, web_config

RECORDING = "This conversation is recorded for regulatory purposes."
_ids = itertools.count(1)


async def ask(sock: Socket, frame: dict[str, Any]) -> dict[str, Any]:
    """Send a request frame and wait for the answer (or error) with its id."""
    fid = f"q{next(_ids)}"
    await sock.send({**frame, "id": fid})
    return await sock.wait_for(lambda f: f.get("id") == fid and f.get("type") in (frame["type"], "error"))


async def delivered(relay: Any, message_id: str) -> None:
    """Wait until the journal has the delivery of `message_id` (it commits just after the send)."""
    for _ in range(500):
        rows = await relay.journal.fetchall("SELECT state FROM deliveries WHERE message_id = ?", (message_id,))
        if any(r["state"] == "delivered" for r in rows):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{message_id} was never delivered")


async def only_conversation(sock: Socket) -> str:
    answer = await ask(sock, {"type": "conversations"})
    assert answer["type"] == "conversations" and len(answer["conversations"]) == 1, answer
    return answer["conversations"][0]["conversation"]


async def test_history_pages_back_through_a_conversation_within_bounds(tmp_path: Path) -> None:
    async with running(web_config(tmp_path / "data")) as relay:
        client = await client_socket(relay.base_url, "v1", "Vera")
        for i in range(45):
            assert (await client.say(f"m{i}", f"note {i}"))["type"] == "ack"
        desk = await desk_socket(relay.base_url, "alice")
        listing = await ask(desk, {"type": "conversations"})
        assert listing["more"] is False
        [conv] = listing["conversations"]
        assert conv["client"] == {"name": "Vera", "channel": "webchat"}
        cid = conv["conversation"]

        newest = await ask(desk, {"type": "history", "conversation": cid})
        assert [m["text"] for m in newest["messages"]] == [f"note {i}" for i in range(15, 45)]
        assert newest["more"] is True and newest["before"] == newest["messages"][0]["seq"]
        assert all(m["who"] == "them" and m["from"]["name"] == "Vera" for m in newest["messages"])
        older = await ask(desk, {"type": "history", "conversation": cid, "before": newest["before"], "limit": 10})
        assert [m["text"] for m in older["messages"]] == [f"note {i}" for i in range(5, 15)]
        assert older["more"] is True
        oldest = await ask(desk, {"type": "history", "conversation": cid, "before": older["before"], "limit": 100})
        assert [m["text"] for m in oldest["messages"]] == [f"note {i}" for i in range(5)]
        assert oldest["more"] is False

        for bad, why in (({"limit": 101}, "`limit` must be a whole number from 1 to 100"),
                         ({"limit": "30"}, "`limit` must be a whole number"),
                         ({"before": 0}, "`before` must be a whole number"),
                         ({"before": True}, "`before` must be a whole number")):
            answer = await ask(desk, {"type": "history", "conversation": cid, **bad})
            assert answer["type"] == "error" and why in answer["error"], answer
        answer = await ask(desk, {"type": "history"})
        assert answer["type"] == "error" and "`conversation` must be a non-empty string" in answer["error"]
        answer = await ask(desk, {"type": "conversations", "limit": 0})
        assert answer["type"] == "error" and "`limit`" in answer["error"]
        await client.close()
        await desk.close()


async def test_only_the_assigned_employee_reads_a_conversation(tmp_path: Path) -> None:
    async with running(web_config(tmp_path / "data")) as relay:
        client = await client_socket(relay.base_url, "v2", "Walt")
        assert (await client.say("c1", "my account number is private"))["type"] == "ack"
        alice = await desk_socket(relay.base_url, "alice")
        cid = await only_conversation(alice)
        bob = await desk_socket(relay.base_url, "bob")
        listing = await ask(bob, {"type": "conversations"})
        assert listing["conversations"] == [] and listing["more"] is False
        for target in (cid, "c-0000000000000000"):
            refused = await ask(bob, {"type": "history", "conversation": target})
            assert refused["type"] == "error"
            assert refused["error"] == f"conversation {target!r} is not assigned to you"
        assert not [f for f in bob.frames if "private" in str(f)]
        mine = await ask(alice, {"type": "history", "conversation": cid})
        assert [m["text"] for m in mine["messages"]] == ["my account number is private"]
        await client.close()
        await alice.close()
        await bob.close()


async def test_own_replies_come_back_as_the_client_received_them_with_their_verdict(tmp_path: Path) -> None:
    async with running(web_config(tmp_path / "data")) as relay:
        client = await client_socket(relay.base_url, "v3", "Xena")
        assert (await client.say("c1", "can you check my card?"))["type"] == "ack"
        desk = await desk_socket(relay.base_url, "alice")
        cid = await only_conversation(desk)
        ack = await desk.reply(cid, "r1", "Is it 4111 1111 1111 1111? Please never send it here.")
        assert ack["type"] == "ack"
        sent = ack["message"]
        assert sent["id"] == "r1" and sent["who"] == "me" and sent["verdict"]["action"] == "redact"
        assert "4111" not in sent["text"] and "[REDACTED]" in sent["text"] and sent["text"].startswith(RECORDING)
        got = await client.wait_for(lambda f: f.get("type") == "message" and "never send" in f.get("text", ""))
        assert got["text"] == sent["text"]
        await desk.send({"type": "edit", "conversation": cid, "id": "e1", "edits": "r1", "text": "Please call us."})
        assert (await desk.wait_for(lambda f: f.get("id") == "e1"))["type"] == "ack"
        await client.wait_for(lambda f: f.get("type") == "edit")
        await delivered(relay, sent["message"])
        await desk.close()

        again = await desk_socket(relay.base_url, "alice")  # a second browser: nothing kept locally
        page = await ask(again, {"type": "history", "conversation": cid})
        first, reply = page["messages"]
        assert first["who"] == "them" and first["text"] == "can you check my card?"
        assert reply["id"] == "r1" and reply["who"] == "me" and reply["from"]["name"] == "Alice"
        assert reply["verdict"] == {"action": "redact", "rules": sent["verdict"]["rules"]} and reply["verdict"]["rules"]
        assert reply["edited"] is True and "Please call us." in reply["text"] and "4111" not in reply["text"]
        assert reply["state"] == "delivered"
        await client.close()
        await again.close()


async def test_a_held_message_is_shown_as_held_and_its_rejection_names_it(tmp_path: Path) -> None:
    cfg = web_config(tmp_path / "data")
    async with running(cfg) as relay:
        client = await client_socket(relay.base_url, "v4", "Yuri")
        assert (await client.say("c1", "this fund has a guaranteed return of 20%"))["type"] == "ack"
        held = await client.wait_for(lambda f: f.get("type") == "notice" and f.get("about") == "held")
        assert held["answers"] == "c1" and "held for a compliance review" in held["text"]
        desk = await desk_socket(relay.base_url, "alice")
        cid = await only_conversation(desk)
        [entry] = (await ask(desk, {"type": "history", "conversation": cid}))["messages"]
        assert entry["state"] == "held" and entry["text"] == "" and entry["verdict"]["action"] == "quarantine"

        await run_action_async(config_from_dict(cfg), "review.reject",
                               {"message_id": entry["message"], "actor": "carol", "reason": "promised returns"})
        rejected = await client.wait_for(lambda f: f.get("type") == "notice" and f.get("about") == "rejected")
        assert rejected["answers"] == "c1" and "will not be delivered" in rejected["text"]
        [entry] = (await ask(desk, {"type": "history", "conversation": cid}))["messages"]
        assert entry["state"] == "rejected" and entry["text"] == ""
        assert not [f for f in desk.frames if "guaranteed" in str(f)]

        ack = await desk.reply(cid, "r9", "Yes, a guaranteed return of 20%.")  # the employee's own, held
        assert ack["message"]["state"] == "held" and ack["message"]["text"] == "Yes, a guaranteed return of 20%."
        told = await desk.wait_for(lambda f: f.get("type") == "notice" and f.get("answers") == "r9")
        assert told["about"] == "held" and told["conversation"] == cid
        mine = (await ask(desk, {"type": "history", "conversation": cid}))["messages"][-1]
        assert (mine["id"], mine["who"], mine["state"]) == ("r9", "me", "held")
        assert not [f for f in client.frames if "guaranteed" in str(f)]
        await client.close()
        await desk.close()


async def test_a_silent_rule_holds_without_telling_the_sender(tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "quiet.yaml").write_text(
        "schema: relay-policy/v1\npolicy: {id: quiet, version: 1}\nrules:\n"
        "  - id: Q-001\n    title: Tip-off risk\n    match: {keywords: [merger]}\n    action: quarantine\n"
        "    silent: true\n    tests:\n      - {text: \"the merger\", expect: quarantine}\n")
    async with running(web_config(tmp_path / "data", policies=policies)) as relay:
        desk = await desk_socket(relay.base_url, "alice")
        client = await client_socket(relay.base_url, "v5", "Zed")
        assert (await client.say("c1", "what about the merger"))["type"] == "ack"
        assert (await client.say("c2", "marker"))["type"] == "ack"
        await desk.wait_for(lambda f: f.get("type") == "message" and f.get("text") == "marker")
        assert client.of_type("notice") == []
        rows = await relay.journal.fetchall("SELECT action FROM messages WHERE text = 'what about the merger'")
        assert rows[0]["action"] == "quarantine"
        await client.close()
        await desk.close()


async def test_after_a_handover_the_history_is_inside_the_conversation(tmp_path: Path) -> None:
    cfg = web_config(tmp_path / "data", members=("alice", "bob"))
    async with running(cfg) as relay:
        client = await client_socket(relay.base_url, "v6", "Olga")
        assert (await client.say("c1", "hello, about my pension"))["type"] == "ack"
        rows = await relay.journal.fetchall("SELECT employee FROM conversations")
        owner, other = ("alice", "bob") if rows[0]["employee"] == "alice" else ("bob", "alice")
        first = await desk_socket(relay.base_url, owner)
        cid = await only_conversation(first)
        assert (await first.reply(cid, "r1", "Happy to help."))["type"] == "ack"
        await run_action_async(config_from_dict(cfg), "handover", {"employee": owner, "to": other, "actor": "erin"})

        second = await desk_socket(relay.base_url, other)
        assert await only_conversation(second) == cid
        page = await ask(second, {"type": "history", "conversation": cid})
        asked, answered = page["messages"][:2]
        assert (asked["who"], asked["text"]) == ("them", "hello, about my pension")
        assert answered["who"] == "staff" and answered["from"]["name"] == owner.title()
        assert answered["text"].startswith(RECORDING) and answered["text"].endswith("Happy to help.")
        assert (await ask(first, {"type": "conversations"}))["conversations"] == []
        assert (await ask(first, {"type": "history", "conversation": cid}))["type"] == "error"
        assert (await first.reply(cid, "r2", "Still there?"))["type"] == "ack"  # journaled, not forwarded
        refused = await first.wait_for(lambda f: f.get("type") == "notice" and f.get("answers") == "r2")
        assert refused["about"] == "refused" and f"assigned to {other}" in refused["text"]
        for sock in (client, first, second):
            await sock.close()


async def test_content_under_an_erasure_request_is_withheld(tmp_path: Path) -> None:
    cfg = web_config(tmp_path / "data", reviewers={"dave": {"role": "supervisor"}})
    async with running(cfg) as relay:
        client = await client_socket(relay.base_url, "v7", "Pia Private")
        assert (await client.say("c1", "my address is 1 Main St"))["type"] == "ack"
        await request_erasure(relay.journal, "webchat:v7", "DSR-7", "dave")
        desk = await desk_socket(relay.base_url, "alice")
        listing = await ask(desk, {"type": "conversations"})
        [conv] = listing["conversations"]
        assert conv["client"] == {"name": "", "channel": "webchat"} and conv["withheld"] == RESTRICTED_NOTE
        [entry] = (await ask(desk, {"type": "history", "conversation": conv["conversation"]}))["messages"]
        assert entry["withheld"] == RESTRICTED_NOTE and entry["text"] == "" and entry["attachments"] == []
        assert entry["from"]["name"] == ""
        assert "Pia" not in str(entry) and "Main St" not in str(listing) + str(entry) and "v7" not in str(listing)
        await client.close()
        await desk.close()



async def test_a_file_in_the_history_comes_from_the_journal_for_the_assigned_employee_only(tmp_path: Path) -> None:
    async with running(web_config(tmp_path / "data")) as relay:
        client = await client_socket(relay.base_url, "v8", "Quin")
        form = aiohttp.FormData()
        form.add_field("file", b"%PDF-1.4 statement", filename="statement.pdf", content_type="application/pdf")
        async with client.session.post(f"{relay.base_url}/chat/upload", params={"visitor": "v8"}, data=form) as resp:
            upload = await resp.json()
        assert (await client.say("c1", "my statement", attachments=[upload["upload"]]))["type"] == "ack"
        alice = await desk_socket(relay.base_url, "alice")
        await alice.wait_for(lambda f: f.get("type") == "message" and f.get("text") == "my statement")
        store = tmp_path / "data" / "uploads" / "files"
        for path in store.glob(upload["sha256"] + "*"):  # as on a relay whose web store lost the file
            path.unlink()
        cid = await only_conversation(alice)
        [entry] = (await ask(alice, {"type": "history", "conversation": cid}))["messages"]
        [att] = entry["attachments"]
        assert att["name"] == "statement.pdf" and att["url"] == f"/desk/history/{entry['message']}/{upload['sha256']}"
        async with alice.session.get(relay.base_url + att["url"]) as resp:
            assert resp.status == 200 and await resp.read() == b"%PDF-1.4 statement"
            assert resp.headers["Content-Type"] == "application/pdf"
        bob = await desk_socket(relay.base_url, "bob")
        async with bob.session.get(relay.base_url + att["url"]) as resp:
            assert resp.status == 404
        async with aiohttp.ClientSession() as anonymous:
            async with anonymous.get(relay.base_url + att["url"]) as resp:
                assert resp.status == 401
        for sock in (client, alice, bob):
            await sock.close()

"""Handover and deactivation through a running relay: conversations stay, history and notices arrive."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from relay.app import RelayApp
from relay.config import DEFAULT_NOTICES
from relay.compliance.handover import HandoverError, handover, set_active
from tests.compliance_support import memory_compliance_config, until, write_config, write_policies

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
async def relay(tmp_path: Path):
    cfg = memory_compliance_config(tmp_path / "data", write_policies(tmp_path / "policies"))
    write_config(tmp_path / "config.yaml", cfg)
    app = await RelayApp.start(cfg)
    try:
        yield app
    finally:
        await app.stop()


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "relay.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)


async def assigned(app: RelayApp) -> list[dict]:
    rows = await app.journal.fetchall("SELECT body_json FROM events WHERE kind = 'conversation.assigned' ORDER BY seq")
    return [json.loads(r["body_json"]) for r in rows]


async def test_handover_moves_a_live_conversation_and_both_notices_arrive(relay: RelayApp, tmp_path: Path) -> None:
    clients, staff = relay.channels["clients"], relay.channels["staff"]
    r = await clients.inject("u1", "hello, I want to invest", "u1:1", display="Una")
    await until(lambda: any(o.to.user == "ann" for o in staff.sent))
    await staff.inject("ann", "happy to help, Una", "ann:1", chat=r.conversation)
    await until(lambda: any("happy to help" in o.text for o in clients.sent))
    done = await asyncio.to_thread(cli, "handover", "ann", "--to", "ben", "--as", "dave", "--reason", "ann left the firm",
                                   "--config", str(tmp_path / "config.yaml"), "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["count"] == 1 and result["moved"][0] == {
        "conversation": r.conversation, "previous": "ann", "employee": "ben", "rerouted": 0, "history_to": "staff:ben",
        "client_notice": True}
    await until(lambda: any(o.to.user == "ben" and o.kind == "notice" and "Handover" in o.text for o in staff.sent))
    history = next(o for o in staff.sent if o.to.user == "ben" and "Handover" in o.text)
    assert history.conversation == r.conversation
    assert "hello, I want to invest" in history.text and "happy to help, Una" in history.text
    await until(lambda: any(o.text.endswith(DEFAULT_NOTICES["handover"]) for o in clients.sent))
    last = (await assigned(relay))[-1]
    assert (last["employee"], last["previous"], last["actor"], last["reason"]) == ("ben", "ann", "dave", "ann left the firm")
    await staff.inject("ben", "Ben here, I have your history", "ben:1", chat=r.conversation)
    await until(lambda: any("Ben here" in o.text for o in clients.sent))
    await clients.inject("u1", "thanks Ben", "u1:2")
    await until(lambda: any(o.to.user == "ben" and o.text.endswith("thanks Ben") for o in staff.sent))
    await staff.inject("ann", "still me", "ann:2", chat=r.conversation)
    await until(lambda: any(o.to.user == "ann" and o.kind == "notice" and "assigned to ben" in o.text for o in staff.sent))
    assert not any("still me" in o.text for o in clients.sent)


async def test_deactivate_reroutes_to_the_desk_and_new_clients_skip_them(relay: RelayApp) -> None:
    clients, staff = relay.channels["clients"], relay.channels["staff"]
    convs = {}
    for u in ("u1", "u2", "u3"):
        convs[u] = (await clients.inject(u, f"hi from {u}", f"{u}:1")).conversation
    await until(lambda: len([o for o in staff.sent if o.kind == "message"]) == 3)
    anns = await relay.router.conversations_of("ann")
    assert len(anns) == 2
    out = await set_active(relay, "ann", False, "dave", "leaver")
    assert sorted(m["conversation"] for m in out["moved"]) == sorted(anns)
    assert all(m["employee"] == "ben" for m in out["moved"])
    assert await relay.router.conversations_of("ann") == []
    moves = [a for a in await assigned(relay) if a["actor"] == "dave"]
    assert len(moves) == 2 and all(a["previous"] == "ann" and a["reason"] == "leaver" for a in moves)
    await clients.inject("u4", "new client", "u4:1")
    await until(lambda: any(o.text.endswith("new client") for o in staff.sent))
    assert next(o for o in staff.sent if o.text.endswith("new client")).to.user == "ben"
    rows = await relay.journal.fetchall("SELECT body_json FROM events WHERE kind = 'admin.action'")
    assert any(json.loads(r["body_json"])["action"] == "employee.deactivate" for r in rows)


async def test_deactivation_reroutes_what_was_waiting_for_them(relay: RelayApp) -> None:
    clients, staff = relay.channels["clients"], relay.channels["staff"]
    r = await clients.inject("u1", "first", "u1:1")
    await until(lambda: any(o.text.endswith("first") for o in staff.sent))
    owner = (await relay.router.get(r.conversation)).employee
    other = "ben" if owner == "ann" else "ann"
    staff.online = False
    for i in range(3):
        await clients.inject("u1", f"waiting {i}", f"u1:w{i}")
    await asyncio.sleep(0.1)
    out = await set_active(relay, owner, False, "dave", "left")
    assert out["moved"][0]["rerouted"] == 3
    staff.online = True
    relay.outbox.wake("staff")
    await until(lambda: len([o for o in staff.sent if o.text.startswith("waiting")]) == 3)
    await asyncio.sleep(0.3)
    got = [o for o in staff.sent if o.text.startswith("waiting")]
    assert [o.text for o in got] == ["waiting 0", "waiting 1", "waiting 2"] and {o.to.user for o in got} == {other}
    failed = await relay.journal.fetchall("SELECT COUNT(*) AS n FROM deliveries WHERE state = 'failed' AND reason = ?",
                                          (f"rerouted to {other}",))
    assert failed[0]["n"] == 3
    assert (await relay.journal.fetchall("SELECT COUNT(*) AS n FROM deliveries WHERE state = 'queued'"))[0]["n"] == 0


async def test_handover_errors_are_clear(relay: RelayApp) -> None:
    clients, staff = relay.channels["clients"], relay.channels["staff"]
    r = await clients.inject("u1", "hello", "u1:1")
    await until(lambda: len(staff.sent) >= 1)
    owner = (await relay.router.get(r.conversation)).employee
    other = "ben" if owner == "ann" else "ann"
    with pytest.raises(HandoverError, match="no employee named 'zed'"):
        await handover(relay, "zed", "ben", "dave")
    with pytest.raises(HandoverError, match="the same employee"):
        await handover(relay, "ann", "ann", "dave")
    with pytest.raises(HandoverError, match=f"assigned to {owner}, not {other}"):
        await handover(relay, other, owner, "dave", conversation=r.conversation)
    with pytest.raises(HandoverError, match="no conversation 'c-none'"):
        await handover(relay, owner, other, "dave", conversation="c-none")
    await set_active(relay, other, False, "dave")
    with pytest.raises(HandoverError, match=f"employee '{other}' is not active"):
        await handover(relay, owner, other, "dave")


async def test_handover_over_the_web_chat_and_desk(tmp_path: Path) -> None:
    """The same, with real WebSockets: bob's desk gets the history, the client's page the notice."""
    from relay.admin import run_action_async
    from relay.config import config_from_dict
    from tests.e2e_support import client_socket, desk_socket, running, web_config

    cfg = web_config(tmp_path / "data", members=("alice", "bob"), reviewers={"dave": {"role": "supervisor"}})
    async with running(cfg) as app:
        alice = await desk_socket(app.base_url, "alice")
        bob = await desk_socket(app.base_url, "bob")
        client = await client_socket(app.base_url, "v-handover", "Hana")
        await client.say("c1", "I would like to open an account")
        first = await alice.wait_for(lambda f: f.get("type") == "message" and "open an account" in f.get("text", ""))
        conv = first["conversation"]
        assert (await alice.reply(conv, "r1", "Of course, Hana."))["type"] == "ack"
        await client.wait_for(lambda f: f.get("type") == "message" and "Of course" in f.get("text", ""))
        result = await run_action_async(config_from_dict(cfg), "handover",
                                        {"employee": "alice", "to": "bob", "actor": "dave", "reason": "alice is leaving"})
        assert result["count"] == 1
        history = await bob.wait_for(lambda f: f.get("type") == "notice" and f.get("conversation") == conv)
        assert "open an account" in history["text"] and "Of course, Hana." in history["text"]
        notice = await client.wait_for(lambda f: f.get("type") in ("notice", "message") and "handed over" in f.get("text", ""))
        assert notice["text"].endswith(app.config.notices["handover"])
        assert (await bob.reply(conv, "r2", "Bob here, I have your history."))["type"] == "ack"
        await client.wait_for(lambda f: f.get("type") == "message" and "Bob here" in f.get("text", ""))
        for s in (client, alice, bob):
            await s.close()


async def test_history_shows_what_was_delivered_never_what_policy_held(relay: RelayApp) -> None:
    clients, staff = relay.channels["clients"], relay.channels["staff"]
    r = await clients.inject("u7", "hello there", "u7:1")
    await until(lambda: any(o.text.endswith("hello there") for o in staff.sent))
    owner = (await relay.router.get(r.conversation)).employee
    other = "ben" if owner == "ann" else "ann"
    await clients.inject("u7", "an insider told me to buy", "u7:2")
    await clients.inject("u7", "is it guaranteed?", "u7:3")
    await until(lambda: any("guaranteed" in o.text for o in staff.sent))
    await handover(relay, owner, other, "dave")
    await until(lambda: any(o.to.user == other and "Handover" in o.text for o in staff.sent))
    text = next(o.text for o in staff.sent if o.to.user == other and "Handover" in o.text)
    assert "hello there" in text and "is it guaranteed?" in text
    assert "insider" not in text and "[held for compliance review]" in text

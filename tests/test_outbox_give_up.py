"""Retries end: a reply to a web visitor who closed the tab is given up after the channel's
`give_up_after`, journaled as a permanent failure, and the employee is told; the journal holds
one event per outage (its first failure, then the outcome), not one per attempt."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from relay.app import RelayApp
from tests.e2e_support import client_socket, desk_socket, running, web_config


async def _events(relay: RelayApp, kind: str, delivery_id: str) -> list[dict[str, Any]]:
    rows = await relay.journal.fetchall(
        "SELECT body_json FROM events WHERE kind = ? AND json_extract(body_json, '$.delivery_id') = ? ORDER BY seq",
        (kind, delivery_id))
    return [json.loads(r["body_json"]) for r in rows]


async def _delivery_to_visitor(relay: RelayApp, text: str) -> str:
    for _ in range(500):
        rows = await relay.journal.fetchall(
            "SELECT delivery_id FROM deliveries WHERE channel = 'webchat' AND json_extract(out_json, '$.text') LIKE ?",
            (f"%{text}%",))
        if rows:
            return rows[0]["delivery_id"]
        await asyncio.sleep(0.01)
    raise AssertionError(f"no delivery of {text!r} to the visitor")


async def test_reply_to_a_departed_visitor_is_given_up_and_the_employee_told(tmp_path: Path) -> None:
    cfg = web_config(tmp_path / "data")
    cfg["outbox"] = {"base_delay": 0.02, "max_delay": 0.05}
    cfg["channels"]["webchat"]["give_up_after"] = 1.5
    async with running(cfg) as relay:
        desk = await desk_socket(relay.base_url, "alice")
        client = await client_socket(relay.base_url, "gone1", "Gina")
        await client.say("c1", "hello, anyone?")
        first = await desk.wait_for(lambda f: f.get("type") == "message" and "anyone" in f.get("text", ""))
        await client.close()
        started = time.monotonic()
        assert (await desk.reply(first["conversation"], "r1", "Yes, here to help"))["type"] == "ack"
        delivery = await _delivery_to_visitor(relay, "here to help")
        notice = await desk.wait_for(lambda f: f.get("type") == "notice", timeout=15)
        gave_up_after = time.monotonic() - started
        assert "could not be delivered" in notice["text"] and "gave up after 1.5 s" in notice["text"]
        assert "visitor offline" in notice["text"]
        assert gave_up_after >= 1.4
        failed = await _events(relay, "delivery.failed", delivery)
        assert [f["permanent"] for f in failed] == [False, True], failed
        assert failed[1]["attempt"] > 3, "retried more than once, but journaled only the first failure"
        assert failed[0]["give_up_at"] > 0
        row = (await relay.journal.fetchall("SELECT state, reason FROM deliveries WHERE delivery_id = ?",
                                            (delivery,)))[0]
        assert row["state"] == "failed" and row["reason"].startswith("gave up after 1.5 s of retries")
        attempts = relay.outbox.retries
        await asyncio.sleep(0.3)
        assert relay.outbox.retries == attempts, "still retrying after giving up"
        assert await _events(relay, "delivery.failed", delivery) == failed
        await desk.close()


async def test_an_outage_that_ends_is_journaled_as_first_failure_then_delivery(tmp_path: Path) -> None:
    cfg = web_config(tmp_path / "data")
    cfg["outbox"] = {"base_delay": 0.02, "max_delay": 0.05}
    async with running(cfg) as relay:
        desk = await desk_socket(relay.base_url, "alice")
        client = await client_socket(relay.base_url, "back1", "Bo")
        await client.say("c1", "hi")
        first = await desk.wait_for(lambda f: f.get("type") == "message" and f.get("text") == "hi")
        await client.close()
        await desk.reply(first["conversation"], "r1", "are you still there")
        delivery = await _delivery_to_visitor(relay, "still there")
        before = relay.outbox.retries
        for _ in range(500):
            if relay.outbox.retries >= before + 5:
                break
            await asyncio.sleep(0.01)
        assert relay.outbox.retries >= before + 5
        back = await client_socket(relay.base_url, "back1", "Bo")
        await back.wait_for(lambda f: f.get("type") == "message" and "still there" in f.get("text", ""))
        failed = await _events(relay, "delivery.failed", delivery)
        assert len(failed) == 1 and failed[0]["permanent"] is False and failed[0]["reason"] == "visitor offline"
        for _ in range(500):
            delivered = await _events(relay, "message.delivered", delivery)
            if delivered:
                break
            await asyncio.sleep(0.01)
        [done] = delivered
        assert done["attempt"] > failed[0]["attempt"] + 4
        await back.close()
        await desk.close()


async def test_give_up_after_a_restart_counts_from_when_it_was_queued(tmp_path: Path) -> None:
    cfg = web_config(tmp_path / "data")
    cfg["outbox"] = {"base_delay": 0.02, "max_delay": 0.05, "give_up_after": 1.0}
    relay = await RelayApp.start(cfg)
    try:
        desk = await desk_socket(relay.base_url, "alice")
        client = await client_socket(relay.base_url, "gone2", "Gus")
        await client.say("c1", "hello")
        first = await desk.wait_for(lambda f: f.get("type") == "message")
        await client.close()
        await desk.reply(first["conversation"], "r1", "answer before restart")
        delivery = await _delivery_to_visitor(relay, "answer before restart")
        await desk.close()
    finally:
        await relay.stop()
    await asyncio.sleep(1.1)
    async with running(cfg) as relay:
        for _ in range(500):
            failed = await _events(relay, "delivery.failed", delivery)
            if failed and failed[-1]["permanent"]:
                break
            await asyncio.sleep(0.01)
        assert [f["permanent"] for f in failed] == [False, True]
        assert "gave up after 1 s of retries" in failed[-1]["reason"]

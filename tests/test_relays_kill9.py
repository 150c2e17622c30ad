"""Two real `relay run` processes on one PostgreSQL journal, web chat and WhatsApp (the fake
Graph server on loopback) driven through both; one is killed with SIGKILL mid-stream and the
other takes over its outbox: every message reaches the desk once, in order per conversation,
every reply reaches WhatsApp once, and the chain verifies."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.e2e_support import client_socket, desk_socket, free_port, start_relay, stop_relay, verify_journal, web_config
from tests.fake_graph import FakeGraph
from tests.pg_support import PgServer, pg_server, pg_url, sql  # noqa: F401  (fixtures)

LEASE = 1.5
WEB = 120  # web chat messages from the visitor on relay A
KILL_AFTER = 30  # acks from A before it is killed
WA = 40  # WhatsApp messages, posted to A and B in turn (to B once A is gone)
WA_ID = "8613800138000"


def config(data: Path, port: int, url: str, graph: FakeGraph) -> dict[str, Any]:
    cfg = web_config(data, port=port, journal={"url": url, "lease_seconds": LEASE, "checkpoint_seconds": 3600})
    cfg["channels"]["whatsapp"] = {
        "network": "whatsapp", "side": "client", "phone_number_id": graph.phone_number_id,
        "access_token": graph.access_token, "app_secret": graph.app_secret, "verify_token": "verify-me",
        "graph_url": graph.url, "api_version": "v21.0", "timeout": 5,
    }
    cfg["desks"]["advisors"]["clients"] += ["whatsapp"]
    return cfg


@pytest.fixture
async def graph() -> AsyncIterator[FakeGraph]:
    g = FakeGraph()
    await g.start()
    yield g
    await g.stop()


async def post_until_accepted(graph: FakeGraph, urls: list[str], body: dict[str, Any]) -> str:
    """As Meta does: a webhook not answered 200 is sent again (here to the next relay)."""
    for attempt in range(200):
        url = urls[attempt % len(urls)]
        try:
            if (await graph.post_webhook(url, body))[0] == 200:
                return url
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.05)
    raise AssertionError("no relay accepted the webhook")


async def until(pred: Callable[[], bool], what: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_kill_9_of_one_relay_mid_stream_the_other_delivers_everything_once_in_order(
    tmp_path: Path, pg_url: str, graph: FakeGraph
) -> None:
    ports = {"a": free_port(), "b": free_port()}
    paths = {}
    for name, port in ports.items():
        paths[name] = tmp_path / f"{name}.yaml"
        paths[name].write_text(yaml.safe_dump(config(tmp_path / name, port, pg_url, graph)))
    base = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    log = tmp_path / "relays.log"
    a = await start_relay(paths["a"], base["a"], log)
    b = await start_relay(paths["b"], base["b"], log)
    try:
        # alice's desk is on B only: what A journals waits in A's outbox (desk offline there)
        desk = await desk_socket(base["b"], "alice")
        visitor_b = await client_socket(base["b"], "visitor-b", "Bea")
        visitor_a = await client_socket(base["a"], "visitor-a", "Abe")
        hooks = {name: f"{base[name]}/webhooks/whatsapp" for name in base}

        async def whatsapp() -> list[str]:
            served = []
            for i in range(WA):
                first = ["a", "b"] if i % 2 == 0 else ["b", "a"]
                body = graph.text_message(WA_ID, f"wa {i:03d}", wamid=f"wamid.IN{i}", name="Wang Fang")
                served.append(await post_until_accepted(graph, [hooks[n] for n in first], body))
                await asyncio.sleep(0.02)
            return served

        async def web_b() -> None:
            for i in range(WEB // 2):
                assert (await visitor_b.say(f"b{i}", f"web b {i:03d}"))["type"] == "ack"

        wa_task = asyncio.create_task(whatsapp())
        b_task = asyncio.create_task(web_b())
        for i in range(WEB):
            await visitor_a.send({"type": "message", "id": f"a{i}", "text": f"web a {i:03d}"})
        await visitor_a.wait_for(lambda f: len(visitor_a.of_type("ack")) >= KILL_AFTER, timeout=60)
        a.send_signal(signal.SIGKILL)
        a.wait(timeout=10)
        acked = {f["id"] for f in visitor_a.of_type("ack")}
        await visitor_a.close()
        assert KILL_AFTER <= len(acked) < WEB, f"kill came too late to test anything: {len(acked)} acked"
        queued_by_a = await sql(pg_url, "SELECT count(*) FROM deliveries WHERE state='queued'")
        assert queued_by_a[0][0] > 0  # A died with deliveries in its outbox

        # the visitor's page reconnects to B and resends what A did not acknowledge
        visitor_a = await client_socket(base["b"], "visitor-a", "Abe")
        for i in range(WEB):
            if f"a{i}" not in acked:
                await visitor_a.send({"type": "message", "id": f"a{i}", "text": f"web a {i:03d}"})
        await visitor_a.wait_for(lambda f: len({x["id"] for x in visitor_a.of_type("ack")} | acked) >= WEB, timeout=60)
        served = await asyncio.wait_for(wa_task, 90)
        assert hooks["a"] in served and hooks["b"] in served  # the webhook network was served by both relays
        await asyncio.wait_for(b_task, 60)

        total = WEB + WEB // 2 + WA
        messages = lambda: desk.of_type("message")  # noqa: E731
        await until(lambda: len({m["id"] for m in messages()}) >= total, "every message at the desk")
        await asyncio.sleep(3 * LEASE)  # room for any second copy to show
        texts = [m["text"] for m in messages()]
        assert len(texts) == len(set(texts)) == total  # 0 lost, 0 twice
        for prefix, n in (("web a ", WEB), ("web b ", WEB // 2), ("wa ", WA)):
            assert [t for t in texts if t.startswith(prefix)] == [f"{prefix}{i:03d}" for i in range(n)]

        # replies from the desk (on B) to the WhatsApp client reach the Graph server once, in order
        wa_conv = next(m["conversation"] for m in messages() if m["text"].startswith("wa "))
        for i in range(5):
            assert (await desk.reply(wa_conv, f"r{i}", f"reply {i}"))["type"] == "ack"
        # (the first carries the recording notice before it)
        replies = lambda: [s["text"]["body"].rsplit("\n", 1)[-1] for s in graph.sent  # noqa: E731
                           if s.get("type") == "text"]
        await until(lambda: len(replies()) >= 5, "the replies at the Graph server", timeout=30)
        await asyncio.sleep(0.5)
        assert replies() == [f"reply {i}" for i in range(5)]
        owners = await sql(pg_url, "SELECT DISTINCT owner FROM deliveries WHERE state='queued'")
        assert owners == []
        for s in (desk, visitor_a, visitor_b):
            await s.close()
    finally:
        if a.poll() is None:
            a.kill()
        stop_relay(b)
    verify = verify_journal(paths["b"])
    assert verify.returncode == 0, verify.stdout + verify.stderr

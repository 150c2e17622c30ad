"""Web chat channel overhead: acked client messages/s over real WebSockets, and upload MB/s.

Baselines in the same run: a bare aiohttp WebSocket that parses each frame and answers an ack
(no channel code), and a bare handler that streams the same upload body to a file. Behind the
channel, each message goes through the real journal (synchronous=FULL, group commit) and the
shipped policies before it is acknowledged: the channel journals `message.received` and the
verdict, as the hub does, so the row is what a client waits for, not the channel alone.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Awaitable, Callable

import aiohttp
from aiohttp import web

from bench.calibration import calibration_us, cpu_figure, process_cpu
from bots.base import ChannelContext
from bots.webchat import create
from relay.hub_records import message_id_for, verdict_json
from relay.journal import Journal
from relay.model import Inbound, Receipt, conversation_id
from relay.outbox import party_json
from relay.policy import EvalInput, PolicySet, load_policy_dir

CLIENTS = 20
PER_CLIENT = 200
UPLOAD_BYTES = 16 * 1024 * 1024
RUNS = 5


class _State:
    async def get(self, key: str) -> str | None:
        return None

    async def put(self, key: str, value: str) -> None:
        return None


POLICIES = Path(__file__).resolve().parents[1] / "policies"


class _JournalingDeliver:
    """`deliver` as the hub's first two steps: evaluate the shipped policies, journal the message
    (raw payload inline) and its verdict in one group-committed unit, then acknowledge."""

    def __init__(self, journal: Journal, policies: PolicySet) -> None:
        self.journal = journal
        self.policies = policies

    async def __call__(self, inbound: Inbound) -> Receipt:
        mid = message_id_for(inbound.channel, inbound.platform_id)
        conv = conversation_id(inbound.channel, inbound.chat)
        verdict = self.policies.evaluate(EvalInput(direction="inbound", channel=inbound.channel, text=inbound.text,
                                                   conversation=conv, message_id=mid))
        raw = bytes(inbound.raw)
        body = {"id": mid, "direction": "inbound", "channel": inbound.channel, "platform_id": inbound.platform_id,
                "chat": inbound.chat, "kind": inbound.kind, "sender": party_json(inbound.sender), "text": inbound.text,
                "attachments": [], "reply_to": None, "edits": None, "sent_at": inbound.sent_at,
                "raw_inline": base64.b64encode(raw).decode("ascii"), "raw_digest": hashlib.sha256(raw).hexdigest(),
                "client": party_json(inbound.sender), "employee": None}
        await self.journal.append_many([("message.received", body, conv),
                                        ("policy.verdict", verdict_json(verdict, mid), conv)], unless_message=mid)
        return Receipt(message_id=mid, conversation=conv)


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"127.0.0.1:{runner.addresses[0][1]}"


async def _channel_app(data_dir: Path, deliver: _JournalingDeliver) -> tuple[web.AppRunner, str]:
    app = web.Application()
    ctx = ChannelContext(name="webchat", side="client", state=_State(), app=app, data_dir=str(data_dir),
                         max_attachment_bytes=UPLOAD_BYTES * 2, wake=lambda a: None)
    channel = create("webchat", {}, ctx)
    await channel.start(deliver)
    return await _serve(app)


async def _bare_app(data_dir: Path) -> tuple[web.AppRunner, str]:
    async def ws_handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            frame = json.loads(msg.data)
            await ws.send_str(json.dumps({"type": "ack", "id": frame["id"]}))
        return ws

    async def upload(request: web.Request) -> web.Response:
        path = data_dir / "bare-upload"
        with path.open("wb") as sink:
            async for chunk in request.content.iter_chunked(64 * 1024):
                sink.write(chunk)
        return web.json_response({"size": path.stat().st_size})

    app = web.Application()
    app.router.add_get("/chat/ws", ws_handler)
    app.router.add_post("/chat/upload", upload)
    return await _serve(app)


async def _messages_per_second(host: str) -> float:
    async def one(session: aiohttp.ClientSession, visitor: str) -> None:
        async with session.ws_connect(f"ws://{host}/chat/ws?visitor={visitor}") as ws:
            for i in range(PER_CLIENT):
                await ws.send_str(json.dumps({"type": "message", "id": f"m{i}", "text": f"message {i}"}))
                while True:
                    frame = json.loads((await ws.receive()).data)
                    if frame.get("type") in ("ack", "error"):
                        break

    async with aiohttp.ClientSession() as session:
        t0 = time.perf_counter()
        await asyncio.gather(*(one(session, f"v{c}") for c in range(CLIENTS)))
        return CLIENTS * PER_CLIENT / (time.perf_counter() - t0)


async def _upload_mb_per_second(host: str, payload: bytes) -> float:
    async with aiohttp.ClientSession() as session:
        form = aiohttp.FormData()
        form.add_field("file", payload, filename="big.bin", content_type="application/octet-stream")
        t0 = time.perf_counter()
        async with session.post(f"http://{host}/chat/upload?visitor=bench", data=form) as resp:
            assert resp.status == 200, await resp.text()
        return len(payload) / (time.perf_counter() - t0) / 1e6


async def _medians(a: Callable[[], Awaitable[float]], b: Callable[[], Awaitable[float]]) -> tuple[float, float]:
    """Median of RUNS for each, alternating a and b after one warm-up of each, so drift hits both."""
    await a()
    await b()
    ra, rb = [], []
    for _ in range(RUNS):
        ra.append(await a())
        rb.append(await b())
    return statistics.median(ra), statistics.median(rb)


async def _run() -> None:
    payload = os.urandom(UPLOAD_BYTES)
    with tempfile.TemporaryDirectory() as tmp:
        journal = await Journal.open(Path(tmp) / "journal", synchronous="FULL")
        deliver = _JournalingDeliver(journal, load_policy_dir(POLICIES))
        channel_runner, channel_host = await _channel_app(Path(tmp) / "channel", deliver)
        bare_runner, bare_host = await _bare_app(Path(tmp))
        cpu: dict[str, list[float]] = {"bare": [], "channel": []}

        def timed(name: str, host: str) -> Callable[[], Awaitable[float]]:
            async def run() -> float:
                t0 = process_cpu()
                rate = await _messages_per_second(host)
                cpu[name].append((process_cpu() - t0) / (CLIENTS * PER_CLIENT) * 1e6)
                return rate
            return run

        try:
            bare_msgs, chan_msgs = await _medians(timed("bare", bare_host), timed("channel", channel_host))
            bare_up, chan_up = await _medians(lambda: _upload_mb_per_second(bare_host, payload),
                                              lambda: _upload_mb_per_second(channel_host, payload))
        finally:
            await channel_runner.cleanup()
            await bare_runner.cleanup()
            await journal.close()
    cal = calibration_us()
    print(f"webchat acked messages/s ({CLIENTS} sockets x {PER_CLIENT}, journal + policy behind, median of {RUNS}): "
          f"{chan_msgs:,.0f}  bare aiohttp ws: {bare_msgs:,.0f}  ratio {chan_msgs / bare_msgs:.2f}")
    print(f"webchat CPU (clients in the same process): channel {cpu_figure(statistics.median(cpu['channel']), cal)};"
          f" bare {cpu_figure(statistics.median(cpu['bare']), cal)}")
    print(f"webchat upload MB/s ({UPLOAD_BYTES >> 20} MiB, sha256 + limit check, median of {RUNS}): "
          f"{chan_up:,.0f}  bare streaming handler: {bare_up:,.0f}  ratio {chan_up / bare_up:.2f}")


def main() -> None:
    asyncio.run(_run())


if __name__ == "__main__":
    main()

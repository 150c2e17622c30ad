"""SMS and Signal clients → Slack staff through the relay, against a bare forwarder on the same fakes.

Relay: a running relay (journal on disk, synchronous=FULL; the shipped policies; hub, outbox)
with the `sms` or `signal` client channel and the `slack` staff channel, each talking to its
fake on loopback (tests/fake_twilio.py, fake_signal.py, fake_slack.py). Baseline, same fakes,
same run: a bare forwarder with no journal and no policy, which for SMS checks the Twilio
signature with the same RequestValidator and posts each text with slack_sdk's AsyncWebClient
into the client's thread; for Signal reads signal-cli's socket and posts likewise. Both drain
N messages from C clients (each client's messages in order, the clients concurrently); the
time is from the first message sent to the last one posted in Slack, median of RUNS runs.
The fakes share the measured event loop (the same for relay and baseline).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
from aiohttp import web
from multidict import MultiDict
from slack_sdk.web.async_client import AsyncWebClient
from twilio.request_validator import RequestValidator

from relay.app import RelayApp
from tests.e2e_support import free_port
from tests.fake_signal import FakeSignalCli
from tests.fake_slack import FakeSlack
from tests.fake_twilio import FakeTwilio

ROOT = Path(__file__).resolve().parents[1]
N = 300
C = 10
RUNS = 3
TEXT = "Hello, I would like to move 5,000 EUR to my savings account this week, can you help me with that?"


def _config(data_dir: Path, port: int, slack: FakeSlack, client: dict[str, Any]) -> dict[str, Any]:
    return {
        "data_dir": str(data_dir), "listen": {"host": "127.0.0.1", "port": port},
        "public_url": f"http://127.0.0.1:{port}", "policies": {"dir": str(ROOT / "policies")},
        "channels": {"clients": client,
                     "slack": {"network": "slack", "side": "staff", "bot_token": slack.token,
                               "signing_secret": slack.signing_secret, "channel": slack.channel,
                               "api_url": slack.url + "/api/"}},
        "employees": {f"e{i}": {"name": f"Employee {i}", "staff": {"channel": "slack", "address": f"U0EMP{i}"}}
                      for i in range(4)},
        "desks": {"d": {"clients": ["clients"], "members": [f"e{i}" for i in range(4)]}},
    }


async def _posted(slack: FakeSlack, n: int, timeout: float = 300.0) -> float:
    deadline = time.monotonic() + timeout
    while sum(1 for p in slack.posts if p.get("thread_ts")) < n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(slack.posts)} Slack posts after {timeout} s")
        await asyncio.sleep(0.005)
    return time.perf_counter()


def _numbers() -> list[str]:
    return [f"+1415555{c:04d}" for c in range(C)]


async def _post_sms(twilio: FakeTwilio, url: str, run: int) -> None:
    async def client(c: int, number: str) -> None:
        for i in range(N // C):
            status, _ = await twilio.post(url, twilio.inbound(number, f"{TEXT} {i}", sid=f"SM{run:04d}{c:04d}{i:024d}"))
            assert status == 200, status

    await asyncio.gather(*(client(c, n) for c, n in enumerate(_numbers())))


async def _push_signal(cli: FakeSignalCli) -> None:
    for i in range(N // C):
        for number in _numbers():
            await cli.push(cli.text(number, f"{TEXT} {i}"))


class _BareSlack:
    """What a forwarder without journal or policy does on the Slack side: one thread per client."""

    def __init__(self, slack: FakeSlack) -> None:
        self.web = AsyncWebClient(token=slack.token, base_url=slack.url + "/api/", session=aiohttp.ClientSession(),
                                  retry_handlers=[])
        self.channel = slack.channel
        self.threads: dict[str, str] = {}
        self.locks: dict[str, asyncio.Lock] = {}

    async def forward(self, client: str, text: str) -> None:
        async with self.locks.setdefault(client, asyncio.Lock()):
            if client not in self.threads:
                root = await self.web.chat_postMessage(channel=self.channel, text=f"New conversation: {client}")
                self.threads[client] = root["ts"]
            await self.web.chat_postMessage(channel=self.channel, thread_ts=self.threads[client], text=text)

    async def close(self) -> None:
        if self.web.session is not None:
            await self.web.session.close()


async def _sms_relay(run: int) -> float:
    twilio, slack = FakeTwilio(), FakeSlack()
    await twilio.start()
    await slack.start()
    port = free_port()
    client = {"network": "sms", "side": "client", "account_sid": twilio.account_sid, "auth_token": twilio.auth_token,
              "from_number": twilio.number, "api_url": twilio.url}
    with tempfile.TemporaryDirectory() as tmp:
        relay = await RelayApp.start(_config(Path(tmp), port, slack, client))
        try:
            t0 = time.perf_counter()
            await _post_sms(twilio, f"http://127.0.0.1:{port}/webhooks/clients", run)
            return await _posted(slack, N) - t0
        finally:
            await relay.stop()
            await slack.stop()
            await twilio.stop()


async def _sms_bare(run: int) -> float:
    twilio, slack = FakeTwilio(), FakeSlack()
    await twilio.start()
    await slack.start()
    bare = _BareSlack(slack)
    validator = RequestValidator(twilio.auth_token)
    port = free_port()
    url = f"http://127.0.0.1:{port}/webhooks/clients"

    async def webhook(request: web.Request) -> web.Response:
        form = MultiDict(parse_qsl((await request.read()).decode(), keep_blank_values=True))
        if not validator.validate(url, form, request.headers.get("X-Twilio-Signature", "")):
            return web.Response(status=403)
        await bare.forward(form["From"], form["Body"])
        return web.Response(text="<Response></Response>", content_type="text/xml")

    app = web.Application()
    app.router.add_post("/webhooks/clients", webhook)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        t0 = time.perf_counter()
        await _post_sms(twilio, url, run)
        return await _posted(slack, N) - t0
    finally:
        await bare.close()
        await runner.cleanup()
        await slack.stop()
        await twilio.stop()


async def _signal_relay(run: int) -> float:
    cli, slack = FakeSignalCli(), FakeSlack()
    await cli.start()
    await slack.start()
    client = {"network": "signal", "side": "client", "account": cli.account, "port": cli.port}
    with tempfile.TemporaryDirectory() as tmp:
        relay = await RelayApp.start(_config(Path(tmp), free_port(), slack, client))
        try:
            while cli.subscriptions < 1:
                await asyncio.sleep(0.01)
            t0 = time.perf_counter()
            await _push_signal(cli)
            return await _posted(slack, N) - t0
        finally:
            await relay.stop()
            await slack.stop()
            await cli.stop()


async def _signal_bare(run: int) -> float:
    cli, slack = FakeSignalCli(), FakeSlack()
    await cli.start()
    await slack.start()
    bare = _BareSlack(slack)
    reader, writer = await asyncio.open_connection(cli.host, cli.port, limit=1 << 20)
    writer.write(b'{"jsonrpc":"2.0","method":"subscribeReceive","params":{},"id":1}\n')
    await writer.drain()

    async def pump() -> None:
        while line := await reader.readline():
            doc = json.loads(line)
            if doc.get("method") == "receive":
                env = doc["params"]["envelope"]
                await bare.forward(env["sourceNumber"], env["dataMessage"]["message"])

    task = asyncio.create_task(pump())
    try:
        while cli.subscriptions < 1:
            await asyncio.sleep(0.01)
        t0 = time.perf_counter()
        await _push_signal(cli)
        return await _posted(slack, N) - t0
    finally:
        task.cancel()
        writer.close()
        await bare.close()
        await slack.stop()
        await cli.stop()


def main() -> None:
    for label, relay_path, bare_path in (("sms → slack", _sms_relay, _sms_bare),
                                         ("signal → slack", _signal_relay, _signal_bare)):
        r = statistics.median(asyncio.run(relay_path(i)) for i in range(RUNS))
        b = statistics.median(asyncio.run(bare_path(i)) for i in range(RUNS))
        print(f"{label}: relay {N / r:,.0f} msg/s, bare forwarder {N / b:,.0f} msg/s; "
              f"ratio relay/bare time {r / b:.2f}x (median of {RUNS} runs of {N} messages from {C} clients)",
              flush=True)


if __name__ == "__main__":
    main()

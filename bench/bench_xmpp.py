"""XMPP throughput: clients → relay (client account → hub → component) → employee, all on
one real Prosody, against the same clients messaging the employee directly on that server.

Both paths use the same bare slixmpp clients in the same run (K senders, each a client
with its own conversation, and one receiving employee), the same message and count; the
relay runs as its own process (`relay run`, as deployed) with its journal durable
(synchronous FULL) and the shipped policies. Prints messages/s for each (median of several
runs, the two paths alternating which goes first) and the ratio relay / direct (target >= 0.5).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from slixmpp import ClientXMPP, Message
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from tests.prosody_support import Prosody
from tests.xmpp_support import relay_config

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "bench-pw"
TEXT = "Hello, I would like to move 5,000 EUR to my savings account this week, can you help me with that?"
SENDERS = 40
PER_SENDER = 25
RUNS = 3


class Bare:
    """A bare slixmpp client: no plugins, counts the chat bodies it receives."""

    def __init__(self, jid: str, port: int) -> None:
        self.jid = jid
        self.port = port
        self.count = 0
        self.target = 0
        self.done = asyncio.Event()
        self.online = asyncio.Event()
        self.xmpp = ClientXMPP(jid, PASSWORD, sasl_mech="PLAIN",
                               plugin_config={"feature_mechanisms": {"unencrypted_plain": True}})
        self.xmpp.enable_starttls = False
        self.xmpp.enable_plaintext = True
        self.xmpp.add_event_handler("session_start", self._start)
        self.xmpp.register_handler(Callback("bench", MatchXPath("{jabber:client}message/{jabber:client}body"),
                                            self._message))

    def _start(self, _: Any) -> None:
        self.xmpp.send_presence()
        self.online.set()

    def _message(self, msg: Message) -> None:
        if msg["type"] == "chat":
            self.count += 1
            if self.target and self.count >= self.target:
                self.done.set()

    def expect(self, n: int) -> None:
        self.count, self.target = 0, n
        self.done.clear()

    async def connect(self) -> Bare:
        self.xmpp.connect("127.0.0.1", self.port)
        await asyncio.wait_for(self.online.wait(), 10)
        return self

    async def close(self) -> None:
        await self.xmpp.disconnect(wait=0.5)
        task = getattr(self.xmpp, "_run_out_filters", None)
        if task is not None:
            task.cancel()


async def timed(senders: list[Bare], receiver: Bare, to_of: list[str], per: int) -> float:
    receiver.expect(len(senders) * per)
    t0 = time.perf_counter()

    async def one(sender: Bare, to: str) -> None:
        for i in range(per):
            sender.xmpp.send_message(mto=to, mbody=TEXT, mtype="chat")
            if i % 10 == 9:
                await asyncio.sleep(0)

    await asyncio.gather(*(one(s, to) for s, to in zip(senders, to_of)))
    await asyncio.wait_for(receiver.done.wait(), 300)
    return len(senders) * per / (time.perf_counter() - t0)


def start_relay(cfg: dict[str, Any], workdir: Path) -> subprocess.Popen[bytes]:
    """`relay run` in its own process, as deployed: the relay does not share the clients' loop."""
    config = workdir / "relay.yaml"
    config.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "relay.cli", "run", "--config", str(config)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=open(workdir / "relay.log", "ab"))  # noqa: SIM115
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if b"relay is running" not in line:
        proc.kill()
        raise RuntimeError(f"relay did not start: {line!r}; see {workdir / 'relay.log'}")
    return proc


def stop_relay(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def one_run(prosody: Prosody, n: int, tmp: Path) -> tuple[float, float]:
    """One relay, one employee, the same senders: time the direct path and the relayed path."""
    alice = prosody.register(f"alice{n}", PASSWORD)
    desk = prosody.register(f"desk{n}", PASSWORD)
    workdir = tmp / f"run{n}"
    workdir.mkdir()
    cfg = relay_config(prosody, str(workdir / "data"), desk, PASSWORD, {"alice": alice}, str(ROOT / "policies"))
    cfg["log_level"] = "WARNING"
    relay = await asyncio.to_thread(start_relay, cfg, workdir)
    clients: list[Bare] = []
    try:
        receiver = await Bare(alice, prosody.c2s_port).connect()
        clients.append(receiver)
        jids = [prosody.register(f"c{n}x{i}", PASSWORD) for i in range(SENDERS)]
        senders = list(await asyncio.gather(*(Bare(jid, prosody.c2s_port).connect() for jid in jids)))
        clients.extend(senders)
        await timed(senders, receiver, [alice] * SENDERS, 1)
        await timed(senders, receiver, [desk] * SENDERS, 1)
        if n % 2:
            relayed = await timed(senders, receiver, [desk] * SENDERS, PER_SENDER)
            direct = await timed(senders, receiver, [alice] * SENDERS, PER_SENDER)
        else:
            direct = await timed(senders, receiver, [alice] * SENDERS, PER_SENDER)
            relayed = await timed(senders, receiver, [desk] * SENDERS, PER_SENDER)
        return direct, relayed
    finally:
        for c in clients:
            await c.close()
        await asyncio.to_thread(stop_relay, relay)


async def run() -> None:
    logging.getLogger("slixmpp").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        with Prosody(Path(tmp) / "prosody", log_level="warn") as prosody:
            direct: list[float] = []
            relayed: list[float] = []
            for n in range(RUNS):
                d, r = await one_run(prosody, n, Path(tmp))
                direct.append(d)
                relayed.append(r)
    d, r = statistics.median(direct), statistics.median(relayed)
    total = SENDERS * PER_SENDER
    print(f"xmpp: {SENDERS} clients x {PER_SENDER} messages ({total} per run), median of {RUNS} runs")
    print(f"  direct client -> employee through Prosody: {d:8.0f} msg/s  (runs: {', '.join(f'{x:.0f}' for x in direct)})")
    print(f"  via relay (journal FULL, shipped policies): {r:8.0f} msg/s  (runs: {', '.join(f'{x:.0f}' for x in relayed)})")
    ratios = [rr / dd for rr, dd in zip(relayed, direct)]
    print(f"  ratio relay / direct (median of per-run ratios): {statistics.median(ratios):.2f}x  "
          f"(runs: {', '.join(f'{x:.2f}' for x in ratios)}; target >= 0.5x)")


def main() -> None:
    asyncio.run(run())


if __name__ == "__main__":
    main()

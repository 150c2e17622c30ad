"""XMPP throughput: clients → relay (client account → hub → component) → employee, all on
one real Prosody, against the same clients messaging the employee directly on that server.

Three paths in each run, with the same bare slixmpp clients (K senders, each a client with
its own conversation, and one receiving employee), the same message and count, the order
rotating from run to run:
- direct: the senders message the employee's account;
- bare forwarder (bench/xmpp_forwarder.py): the relay's shape (desk account in, component
  out) with none of its work, so the ceiling of any relay of this topology on this machine;
- relay: `relay run` in its own process, as deployed, journal durable (synchronous FULL),
  shipped policies.
Prints messages/s for each (median of several runs), relay / direct (target >= 0.5), the
ceiling (forwarder / direct) and relay / forwarder (relay's own cost). RELAY_BENCH_LOG=DEBUG
keeps every stanza in the relay's log.
"""

from __future__ import annotations

import asyncio
import json
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
RUNS = 5


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


def start_process(args: list[str], ready: bytes, log_path: Path) -> subprocess.Popen[bytes]:
    """A relay or forwarder in its own process, as deployed: it does not share the clients' loop."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=open(log_path, "ab"))  # noqa: SIM115
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if ready not in line:
        proc.kill()
        raise RuntimeError(f"{args[0]} did not start: {line!r}; see {log_path}")
    return proc


def start_relay(cfg: dict[str, Any], workdir: Path) -> subprocess.Popen[bytes]:
    """`relay run` with the config."""
    config = workdir / "relay.yaml"
    config.write_text(yaml.safe_dump(cfg))
    return start_process(["relay.cli", "run", "--config", str(config)], b"relay is running", workdir / "relay.log")


def start_forwarder(prosody: Prosody, desk: str, employee: str, workdir: Path) -> subprocess.Popen[bytes]:
    """The bare forwarder (bench/xmpp_forwarder.py) on the relay's desk account and component."""
    settings = {"desk": desk, "password": PASSWORD, "c2s_port": prosody.c2s_port, "employee": employee,
                "component": prosody.component_domain, "secret": prosody.component_secret,
                "component_port": prosody.component_port}
    return start_process(["bench.xmpp_forwarder", json.dumps(settings)], b"forwarder is running",
                         workdir / "forwarder.log")


def stop_relay(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def one_run(prosody: Prosody, n: int, tmp: Path) -> dict[str, float]:
    """The same senders and employee through each path in turn (the order rotates per run):
    direct, the bare forwarder, and the relay. Only one of forwarder and relay holds the component."""
    alice = prosody.register(f"alice{n}", PASSWORD)
    desk = prosody.register(f"desk{n}", PASSWORD)
    fwd_desk = prosody.register(f"fwd{n}", PASSWORD)
    workdir = tmp / f"run{n}"
    workdir.mkdir()
    cfg = relay_config(prosody, str(workdir / "data"), desk, PASSWORD, {"alice": alice}, str(ROOT / "policies"))
    cfg["log_level"] = os.environ.get("RELAY_BENCH_LOG", "WARNING")  # DEBUG shows every stanza in run<n>/relay.log
    clients: list[Bare] = []
    rates: dict[str, float] = {}
    try:
        receiver = await Bare(alice, prosody.c2s_port).connect()
        clients.append(receiver)
        jids = [prosody.register(f"c{n}x{i}", PASSWORD) for i in range(SENDERS)]
        senders = list(await asyncio.gather(*(Bare(jid, prosody.c2s_port).connect() for jid in jids)))
        clients.extend(senders)
        order = ["direct", "forwarder", "relay"]
        for path in order[n % 3:] + order[:n % 3]:
            if path == "direct":
                await timed(senders, receiver, [alice] * SENDERS, 1)
                rates[path] = await timed(senders, receiver, [alice] * SENDERS, PER_SENDER)
                continue
            if path == "relay":
                proc, to = await asyncio.to_thread(start_relay, cfg, workdir), desk
            else:
                proc, to = await asyncio.to_thread(start_forwarder, prosody, fwd_desk, alice, workdir), fwd_desk
            try:
                await timed(senders, receiver, [to] * SENDERS, 1)
                rates[path] = await timed(senders, receiver, [to] * SENDERS, PER_SENDER)
            finally:
                await asyncio.to_thread(stop_relay, proc)
        return rates
    finally:
        for c in clients:
            await c.close()


async def run() -> None:
    logging.getLogger("slixmpp").setLevel(logging.ERROR)
    results: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        with Prosody(Path(tmp) / "prosody", log_level="warn") as prosody:
            for n in range(RUNS):
                results.append(await one_run(prosody, n, Path(tmp)))
                print(f"  run {n + 1}/{RUNS}: " + ", ".join(f"{k} {v:.0f} msg/s" for k, v in results[-1].items()),
                      flush=True)
    total = SENDERS * PER_SENDER
    print(f"xmpp: {SENDERS} clients x {PER_SENDER} messages ({total} per run), median of {RUNS} runs")
    labels = {"direct": "direct client -> employee through Prosody",
              "forwarder": "bare forwarder (no journal, no policy)",
              "relay": "via relay (journal FULL, shipped policies)"}
    for path, label in labels.items():
        rates = [r[path] for r in results]
        print(f"  {label:44s} {statistics.median(rates):8.0f} msg/s  (runs: {', '.join(f'{x:.0f}' for x in rates)})")

    def ratio(a: str, b: str) -> str:
        values = [r[a] / r[b] for r in results]
        return f"{statistics.median(values):.2f}x (runs: {', '.join(f'{x:.2f}' for x in values)})"

    print(f"  ratio relay / direct (median of per-run ratios): {ratio('relay', 'direct')}; target >= 0.5x")
    print(f"  ceiling: bare forwarder / direct: {ratio('forwarder', 'direct')}")
    print(f"  relay / bare forwarder: {ratio('relay', 'forwarder')}")


def main() -> None:
    asyncio.run(run())


if __name__ == "__main__":
    main()

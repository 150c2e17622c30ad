"""End to end in one process through two in-memory channels (client side → staff side).

Measures sustained messages/s with the journal durable (synchronous=FULL) and the shipped
policies, p50/p99 latency at 500 msg/s offered, and the ratio to a bare forwarder that hands
the same Inbounds straight to the staff channel in the same run (no journal, no policy).
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.calibration import calibration_us, cpu_figure, process_cpu
from bots.memory.channel import MemoryChannel
from relay.app import RelayApp
from relay.model import Inbound, Outgoing, Party

ROOT = Path(__file__).resolve().parents[1]
TEXT = "Hello, I would like to move 5,000 EUR to my savings account this week, can you help me with that?"


def bench_config(data_dir: Path) -> dict[str, Any]:
    return {
        "data_dir": str(data_dir),
        "listen": {"host": "127.0.0.1", "port": 0},
        "policies": {"dir": str(ROOT / "policies")},
        "channels": {"clients": {"network": "memory", "side": "client"},
                     "staff": {"network": "memory", "side": "staff"}},
        "employees": {f"e{i}": {"name": f"Employee {i}", "staff": {"channel": "staff", "address": f"e{i}"}}
                      for i in range(4)},
        "desks": {"d": {"clients": ["clients"], "members": [f"e{i}" for i in range(4)]}},
    }


async def _wait_for(ch: MemoryChannel, n: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while len(ch.sent) < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(ch.sent)} of {n} delivered")
        ch.arrived.clear()
        try:
            await asyncio.wait_for(ch.arrived.wait(), 0.5)
        except asyncio.TimeoutError:
            pass


async def relay_throughput(n: int, clients: int = 200) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        relay = await RelayApp.start(bench_config(Path(tmp)))
        try:
            src: MemoryChannel = relay.channels["clients"]  # type: ignore[assignment]
            dst: MemoryChannel = relay.channels["staff"]  # type: ignore[assignment]
            per = n // clients
            t0 = time.perf_counter()

            async def client(c: int) -> None:
                for i in range(per):
                    await src.inject(f"u{c}", TEXT, f"{c}:{i}")

            await asyncio.gather(*(client(c) for c in range(clients)))
            await _wait_for(dst, per * clients)
            return per * clients / (time.perf_counter() - t0)
        finally:
            await relay.stop()


async def bare_throughput(n: int, clients: int = 200) -> float:
    """The same Inbounds handed to a channel's send directly: the cost of no compliance at all."""
    dst = MemoryChannel("staff", None)  # type: ignore[arg-type]
    per = n // clients
    t0 = time.perf_counter()

    async def client(c: int) -> None:
        for i in range(per):
            inb = Inbound("clients", f"{c}:{i}", Party("clients", f"u{c}"), f"u{c}", text=TEXT, raw=TEXT.encode())
            await dst.send(Outgoing(inb.chat, Party("staff", "e0"), inb.text, inb.platform_id, origin=inb.sender))

    await asyncio.gather(*(client(c) for c in range(clients)))
    return per * clients / (time.perf_counter() - t0)


async def latency(rate: float, seconds: float) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        relay = await RelayApp.start(bench_config(Path(tmp)))
        try:
            src: MemoryChannel = relay.channels["clients"]  # type: ignore[assignment]
            dst: MemoryChannel = relay.channels["staff"]  # type: ignore[assignment]
            n = int(rate * seconds)
            starts: dict[str, float] = {}
            t0 = time.perf_counter()
            tasks = []
            for i in range(n):
                target = t0 + i / rate
                delay = target - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                pid = f"{i % 100}:{i}"
                starts[pid] = time.perf_counter()
                tasks.append(asyncio.create_task(src.inject(f"u{i % 100}", TEXT, pid)))
            await asyncio.gather(*tasks)
            await _wait_for(dst, n)
            from relay.hub_records import message_id_for

            by_mid = {message_id_for("clients", pid): t for pid, t in starts.items()}
            lat = sorted((at - by_mid[out.message_id]) * 1000 for out, at in zip(dst.sent, dst.sent_at))
            return lat[len(lat) // 2], lat[int(len(lat) * 0.99) - 1]
        finally:
            await relay.stop()


def main() -> None:
    runs, n = 3, 6000
    relay_cpu: list[float] = []
    bare_cpu: list[float] = []

    def timed(run: Any, cpu: list[float]) -> float:
        t0 = process_cpu()
        rate = asyncio.run(run(n))
        cpu.append((process_cpu() - t0) / n * 1e6)  # start-up and shutdown included
        return rate

    relay_rates = [timed(relay_throughput, relay_cpu) for _ in range(runs)]
    bare_rates = [timed(bare_throughput, bare_cpu) for _ in range(runs)]
    r = statistics.median(relay_rates)
    b = statistics.median(bare_rates)
    cal = calibration_us()
    print(f"e2e: {r:,.0f} msg/s sustained through relay (median of {runs}; runs {', '.join(f'{x:,.0f}' for x in relay_rates)});"
          f" {cpu_figure(statistics.median(relay_cpu), cal)}")
    print(f"e2e: bare forwarder {b:,.0f} msg/s; {cpu_figure(statistics.median(bare_cpu), cal)};"
          f" relay/bare ratio {r / b:.3f}x (target: relay >= 3,000 msg/s)")
    lats = [asyncio.run(latency(500, 4.0)) for _ in range(runs)]
    p50 = statistics.median(x[0] for x in lats)
    p99 = statistics.median(x[1] for x in lats)
    print(f"e2e: latency at 500 msg/s offered: p50 {p50:.2f} ms, p99 {p99:.2f} ms (median of {runs}; target p99 <= 10 ms)")


if __name__ == "__main__":
    main()

"""Telegram client → staff throughput through the fake Bot API server, against a bare bot.

Relay: two Telegram channels (client bot, staff bot in a forum group), journal with
synchronous=FULL, the shipped policies, hub and outbox. Baseline: a bare python-telegram-bot
`Application` whose only handler forwards each text into the staff group with the staff bot
(no journal, no policy), with PTB's `concurrent_updates(True)` so its handlers run side by
side as a forwarder's author would set it (PTB's default runs one update at a time), and a pool
of 8 connections for its staff bot (PTB's default pool of one would time those handlers out).
Both drain the same backlog (N messages from C clients) from a fake server that runs in its
own process, so it does not compete for the measured event loop. The rate is taken between
the first and the last message arriving in the staff group, median of several runs.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import resource
import statistics
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests"))

from bench.calibration import calibration_us, cpu_figure  # noqa: E402

CLIENT_TOKEN = "111111:bench-client"
STAFF_TOKEN = "222222:bench-staff"
STAFF_GROUP = -1009999
TEXT = "Hello, I would like to move 5,000 EUR to my savings account this week, can you help me with that?"


def _serve(conn: Connection, n: int, clients: int, topics: bool) -> None:
    """Child process: a fake server preloaded with the backlog; reports arrival times."""
    from fake_telegram import FakeTelegram

    async def run() -> None:
        fake = FakeTelegram()
        await fake.start()
        fake.add_bot(CLIENT_TOKEN, "bench_client_bot")
        fake.add_bot(STAFF_TOKEN, "bench_staff_bot")
        fake.add_forum(STAFF_GROUP, "Bench staff")
        users = [FakeTelegram.user(10_000 + c, f"Client{c}", "Bench") for c in range(clients)]
        thread_of: dict[int, int] = {}
        if topics:
            for u in users:
                thread = 100_000 + u["id"]
                fake.topics[STAFF_GROUP][thread] = f"{u['first_name']} (bare)"
                thread_of[u["id"]] = thread
        arrivals: list[float] = []
        done = asyncio.Event()

        def arrived(msg: dict[str, Any]) -> None:
            if msg["chat"]["id"] == STAFF_GROUP and "text" in msg:
                arrivals.append(time.perf_counter())
                if len(arrivals) >= n:
                    done.set()

        fake.on_bot_message = arrived
        for i in range(n):
            fake.user_message(CLIENT_TOKEN, users[i % clients], text=f"{TEXT} #{i}")
        conn.send((fake.port, thread_of))
        loop = asyncio.get_running_loop()
        stop = loop.create_future()
        loop.add_reader(conn.fileno(), lambda: stop.done() or stop.set_result(None))
        await asyncio.wait([asyncio.ensure_future(done.wait()), stop], timeout=300, return_when=asyncio.FIRST_COMPLETED)
        conn.send((len(arrivals), arrivals[0] if arrivals else 0.0, arrivals[-1] if arrivals else 0.0))
        await asyncio.wait_for(stop, 30)
        loop.remove_reader(conn.fileno())
        await fake.stop()

    asyncio.run(run())


class FakeProcess:
    def __init__(self, n: int, clients: int, topics: bool) -> None:
        self.parent, child = mp.Pipe()
        self.proc = mp.get_context("fork").Process(target=_serve, args=(child, n, clients, topics), daemon=True)
        self.proc.start()
        self.port, self.threads = self.parent.recv()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/bot"

    @property
    def base_file_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/file/bot"

    async def result(self, n: int, timeout: float = 120.0) -> float:
        """Messages/s between the first and the last arrival in the staff group."""
        loop = asyncio.get_running_loop()
        ok = await loop.run_in_executor(None, self.parent.poll, timeout)
        if not ok:
            raise TimeoutError("the fake server did not see all messages arrive")
        count, first, last = self.parent.recv()
        if count < n:
            raise RuntimeError(f"only {count} of {n} messages arrived")
        return (n - 1) / (last - first)

    def close(self) -> None:
        try:
            self.parent.send("stop")
        except OSError:
            pass
        self.proc.join(10)


async def relay_rate(n: int, clients: int) -> float:
    from relay.app import RelayApp

    fake = FakeProcess(n, clients, topics=False)
    common = {"base_url": fake.base_url, "base_file_url": fake.base_file_url, "poll_timeout": 1}
    with tempfile.TemporaryDirectory() as tmp:
        cfg = {
            "data_dir": tmp,
            "listen": {"host": "127.0.0.1", "port": 0},
            "policies": {"dir": str(ROOT / "policies")},
            "channels": {
                "telegram-clients": {"network": "telegram", "side": "client", "token": CLIENT_TOKEN, **common},
                "telegram-staff": {"network": "telegram", "side": "staff", "token": STAFF_TOKEN,
                                   "staff_group": STAFF_GROUP, **common},
            },
            "employees": {"alice": {"name": "Alice", "staff": {"channel": "telegram-staff", "address": "9001"}}},
            "desks": {"d": {"clients": ["telegram-clients"], "members": ["alice"]}},
        }
        relay = await RelayApp.start(cfg)
        try:
            return await fake.result(n)
        finally:
            await relay.stop()
            fake.close()


async def bare_rate(n: int, clients: int) -> float:
    from telegram import Bot, Update
    from telegram.ext import Application, ContextTypes, MessageHandler, filters

    fake = FakeProcess(n, clients, topics=True)
    from telegram.request import HTTPXRequest

    # Concurrent handlers share the staff bot's connection pool: PTB's default pool of one
    # connection times them out, so a user enabling concurrency gives it a few connections.
    staff = Bot(STAFF_TOKEN, base_url=fake.base_url, base_file_url=fake.base_file_url,
                request=HTTPXRequest(connection_pool_size=8, pool_timeout=60.0))

    async def forward(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        msg = update.effective_message
        assert msg is not None and msg.text is not None
        await staff.send_message(STAFF_GROUP, msg.text, message_thread_id=fake.threads[msg.chat_id])

    app = (Application.builder().token(CLIENT_TOKEN).base_url(fake.base_url).base_file_url(fake.base_file_url)
           .concurrent_updates(True).build())  # handlers run concurrently, as a forwarder's author would set it
    app.add_handler(MessageHandler(filters.TEXT, forward))
    await staff.initialize()
    await app.initialize()
    await app.start()
    assert app.updater is not None
    await app.updater.start_polling(poll_interval=0.0, timeout=1)
    try:
        return await fake.result(n)
    finally:
        await app.updater.stop()
        await app.stop()
        await app.shutdown()
        await staff.shutdown()
        fake.close()


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _measure(fn: Any, n: int, clients: int) -> tuple[float, float]:
    """(messages/s, CPU ms per message of this process, start-up included)."""
    before = _cpu()
    rate = asyncio.run(fn(n, clients))
    return rate, (_cpu() - before) / n * 1000


def main() -> None:
    import logging
    import warnings

    logging.getLogger("telegram").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=DeprecationWarning, module="telegram")
    n, clients, runs = 1000, 20, 5
    relay_runs: list[tuple[float, float]] = []
    bare_runs: list[tuple[float, float]] = []
    for _ in range(runs):
        bare_runs.append(_measure(bare_rate, n, clients))
        relay_runs.append(_measure(relay_rate, n, clients))
    r = statistics.median(x for x, _ in relay_runs)
    b = statistics.median(x for x, _ in bare_runs)
    rc = statistics.median(c for _, c in relay_runs)
    bc = statistics.median(c for _, c in bare_runs)
    cal = calibration_us()
    print(f"telegram: relay {r:,.0f} msg/s client -> staff through the fake Bot API ({n} messages, {clients} clients; "
          f"median of {runs}: {', '.join(f'{x:,.0f}' for x, _ in relay_runs)}); {cpu_figure(rc * 1000, cal)}")
    print(f"telegram: bare PTB forwarder (concurrent updates) {b:,.0f} msg/s ({', '.join(f'{x:,.0f}' for x, _ in bare_runs)});"
          f" {cpu_figure(bc * 1000, cal)}")
    print(f"telegram: relay/bare ratio {r / b:.2f}x (target >= 0.7x)")


if __name__ == "__main__":
    main()

"""Durable journal appends (synchronous=FULL): group commit vs one commit per event.

Each producer plays one conversation the way the hub writes it: per message a
message.received, a policy.verdict, a delivery.queued and a message.delivered, each awaited
before the next (so every event is acknowledged only after its own commit), carrying the raw
payload inline and chained with HMAC as the hub writes them. The baseline is
the same code path with `max_batch=1`: one transaction, one fsync, per event.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.calibration import calibration_us, cpu_figure, process_cpu
from relay.journal import Journal

PRODUCERS = 200
GROUP_EVENTS = 20_000
SINGLE_EVENTS = 2_000
RUNS = 3


RAW = json.dumps({"update_id": 1, "message": {"message_id": 1, "chat": {"id": 42, "type": "private"},
                  "from": {"id": 42, "first_name": "Client"}, "date": 1700000000,
                  "text": "Hello, I would like to check the balance of account 7, thank you 谢谢"}}).encode()
RAW_INLINE = base64.b64encode(RAW).decode("ascii")
RAW_DIGEST = hashlib.sha256(RAW).hexdigest()
"""A network's raw payload as the hub journals one under 16 KiB: inline, base64, with its digest."""
HMAC_KEY = b"bench journal hmac key, 32 bytes"


def _bodies(producer: int, n: int) -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    client = {"channel": "webchat", "user": f"client-{producer}", "display": f"Client {producer}"}
    for k in range(n // 4 + 1):
        mid = f"m-{producer}-{k}"
        did = f"d-{producer}-{k}"
        out += [
            ("message.received", {
                "id": mid, "direction": "inbound", "channel": "webchat", "platform_id": f"{producer}:{k}",
                "chat": f"chat-{producer}", "kind": "message", "sender": client,
                "text": f"Hello, I would like to check the balance of account {k}, thank you 谢谢",
                "attachments": [], "reply_to": None, "edits": None, "sent_at": 1.7e9,
                "raw_inline": RAW_INLINE, "raw_digest": RAW_DIGEST, "client": client, "employee": "alice",
            }),
            ("policy.verdict", {
                "message_id": mid, "action": "allow", "review": False, "rules": [], "disclaimers": [],
                "redactions": [], "policy_version": "cd" * 32,
            }),
            ("delivery.queued", {
                "delivery_id": did, "message_id": mid, "channel": "webdesk",
                "to": {"channel": "webdesk", "user": "alice", "display": "Alice"},
                "out": {"kind": "message", "text": "Hello", "attachments": [], "reply_to": None, "edits": None,
                        "origin": client, "client": client, "action": "allow", "rules": []},
            }),
            ("message.delivered", {"delivery_id": did, "message_id": mid, "channel": "webdesk",
                                   "platform_id": f"w-{producer}-{k}", "attempt": 1}),
        ]
    return out[:n]


async def _run(events: int, max_batch: int) -> tuple[float, int, float]:
    """Events per second, the number of commits and the process CPU seconds per event (all
    threads: a figure that other load on the machine disturbs less than the rate), on a fresh
    journal in a temp dir."""
    per_producer = events // PRODUCERS
    work = [_bodies(p, per_producer) for p in range(PRODUCERS)]
    with tempfile.TemporaryDirectory(prefix="bench-journal-") as tmp:
        journal = await Journal.open(Path(tmp), synchronous="FULL", max_batch=max_batch, hmac_key=HMAC_KEY)

        async def producer(p: int) -> None:
            conversation = f"c-{p}"
            for kind, body in work[p]:
                await journal.append(kind, body, conversation)

        start, cpu = time.perf_counter(), process_cpu()
        await asyncio.gather(*(producer(p) for p in range(PRODUCERS)))
        elapsed, cpu = time.perf_counter() - start, process_cpu() - cpu
        commits = journal.stats.commits
        await journal.close()
    return per_producer * PRODUCERS / elapsed, commits, cpu / (per_producer * PRODUCERS)


def main() -> None:
    group: list[tuple[float, int, float]] = []
    single: list[tuple[float, int, float]] = []
    for _ in range(RUNS):  # interleaved, so both see the same disk and CPU conditions
        group.append(asyncio.run(_run(GROUP_EVENTS, 10_000)))
        single.append(asyncio.run(_run(SINGLE_EVENTS, 1)))
    g = statistics.median(r for r, _, _ in group)
    s = statistics.median(r for r, _, _ in single)
    commits = statistics.median(c for _, c, _ in group)
    cpu = statistics.median(c for _, _, c in group)
    print(
        f"journal: {g:.0f} ev/s group commit ({GROUP_EVENTS} events, {PRODUCERS} producers, "
        f"~{GROUP_EVENTS / commits:.0f} events per commit), {s:.0f} ev/s one commit per event, "
        f"ratio {g / s:.0f}x (synchronous=FULL, HMAC chain, raw payloads inline, median of {RUNS});"
        f" group commit {cpu_figure(cpu * 1e6, calibration_us(), per='event')}"
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()

"""Desk history: one page (30 messages) of a conversation read back from the journal's projections.

Baseline in the same run: the same page of a conversation of 100 messages; measured: the newest
and a middle page of a conversation of 10,000 messages, and an employee's conversation list (a
page of 50) with 2,000 conversations against one with 60. Pages of a conversation are read by
index (ratio near 1); the list sorts the employee's conversations by latest activity (the index is
on the employee alone, so the hot path, every message's append, does not pay to keep it sorted).
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from relay.desk_history import JournalHistory
from relay.journal import Journal

BIG = 10_000
SMALL = 100
MANY_CONVERSATIONS = 2_000
FEW_CONVERSATIONS = 60
PAGE = 30
CALLS = 500
Event = tuple[str, dict[str, Any], "str | None"]


def _message(cid: str, visitor: str, i: int, employee: str) -> list[Event]:
    mid = f"m-{cid}-{i}"
    client = {"channel": "webchat", "user": visitor, "display": "Vera"}
    text = f"message {i} about the account and the transfer"
    did = f"d-{cid}-{i}"
    return [
        ("message.received", {"id": mid, "direction": "inbound", "channel": "webchat", "platform_id": f"{visitor}:{i}",
                              "chat": visitor, "kind": "message", "sender": client, "text": text, "attachments": [],
                              "client": client, "employee": employee}, cid),
        ("policy.verdict", {"message_id": mid, "action": "allow", "rules": []}, cid),
        ("delivery.queued", {"delivery_id": did, "message_id": mid, "channel": "webdesk",
                             "to": {"channel": "webdesk", "user": employee, "display": ""},
                             "out": {"kind": "message", "text": text, "attachments": []}}, cid),
        ("message.delivered", {"delivery_id": did, "message_id": mid, "platform_id": mid}, cid),
    ]


async def _fill(journal: Journal) -> None:
    batch: list[Event] = []

    async def flush(force: bool = False) -> None:
        if batch and (force or len(batch) >= 4000):
            await journal.append_many(list(batch))
            batch.clear()

    for cid, visitor, count, employee in (("c-big", "vbig", BIG, "alice"), ("c-small", "vsmall", SMALL, "bob")):
        for i in range(count):
            batch += _message(cid, visitor, i, employee)
            await flush()
    for n in range(MANY_CONVERSATIONS):
        batch += _message(f"c-many-{n}", f"vm{n}", 0, "carl")
        await flush()
    for n in range(FEW_CONVERSATIONS):
        batch += _message(f"c-few-{n}", f"vf{n}", 0, "dana")
    await flush(force=True)


def _p95(values: list[float]) -> float:
    return sorted(values)[int(len(values) * 0.95) - 1]


async def _run() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        journal = await Journal.open(Path(tmp), synchronous="OFF", checkpoint_seconds=3600)
        try:
            t0 = time.perf_counter()
            await _fill(journal)
            fill = time.perf_counter() - t0
            history = JournalHistory(journal)
            middle = (await journal.fetchall("SELECT seq FROM messages WHERE id = ?", (f"m-c-big-{BIG // 2}",)))[0][0]
            cases = {
                "small": lambda: history.messages("bob", "c-small", None, PAGE),
                "big newest": lambda: history.messages("alice", "c-big", None, PAGE),
                "big middle": lambda: history.messages("alice", "c-big", middle, PAGE),
                "few conversations": lambda: history.conversations("dana", None, 50),
                "many conversations": lambda: history.conversations("carl", None, 50),
            }
            for call in cases.values():  # warm-up, and a check that each case reads what it should
                assert (await call()) is not None
            assert len((await history.messages("alice", "c-big", middle, PAGE)).items) == PAGE
            runs: dict[str, list[float]] = {name: [] for name in cases}
            for _ in range(CALLS):  # one call of each case in turn, so drift hits every case alike
                for name, call in cases.items():
                    t1 = time.perf_counter()
                    await call()
                    runs[name].append(time.perf_counter() - t1)
        finally:
            await journal.close()
    med = {name: statistics.median(v) * 1000 for name, v in runs.items()}
    p95 = {name: _p95(v) * 1000 for name, v in runs.items()}
    print(f"desk history: journal of {(BIG + SMALL + MANY_CONVERSATIONS + FEW_CONVERSATIONS) * 4:,} events "
          f"filled in {fill:.1f} s; {CALLS} calls per case")
    for name in ("big newest", "big middle"):
        print(f"history page of {PAGE}, {name} ({BIG:,} messages): median {med[name]:.2f} ms p95 {p95[name]:.2f} ms"
              f"  {SMALL} messages: median {med['small']:.2f} ms  ratio {med[name] / med['small']:.2f}")
    print(f"conversation list, {MANY_CONVERSATIONS:,} conversations: median {med['many conversations']:.2f} ms "
          f"p95 {p95['many conversations']:.2f} ms  {FEW_CONVERSATIONS}: median {med['few conversations']:.2f} ms  "
          f"ratio {med['many conversations'] / med['few conversations']:.2f}")


def main() -> None:
    asyncio.run(_run())

"""Console page speed: the queue page and an item page over HTTP (logged in, through aiohttp and
the console's handlers) with 10,000 open review items in a journal of 1,000,000 events, against
the same pages with 100 open items (a journal of 10,000 events) in the same run.

The big journal is built once with correct hash chains (events written in blocks straight into
SQLite, hashed with the journal's own chain functions, projected by its own projection code) and
cached in bench/.cache (gitignored); `relay journal verify` passes on it.
"""

from __future__ import annotations

import asyncio
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Iterator

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from relay.journal import Journal  # noqa: E402
from relay.journal.chain import GENESIS, canonical_json, canonical_str, event_hash, fast_canonical  # noqa: E402
from relay.journal.projections import apply_events  # noqa: E402

CACHE = ROOT / "bench" / ".cache"
BIG = (1_000_000, 10_000)
SMALL = (10_000, 100)
RUNS = int(os.environ.get("BENCH_CONSOLE_RUNS", "40"))
BLOCK = 2_500
POLICY = """\
schema: relay-policy/v1
policy: {id: bench, version: 1}
rules:
  - id: F-001
    title: Promissory language
    severity: medium
    match: {keywords: [guaranteed]}
    action: flag
    tests:
      - {text: "guaranteed profit", expect: flag}
"""
WORDS = ("bond", "allocation", "settlement", "coupon", "trade", "yield", "fund", "price", "order", "desk")


def _messages(n_events: int, n_open: int) -> Iterator[list[tuple[str, str | None, dict[str, Any]]]]:
    """Blocks of events: each block's messages, then their verdicts, deliveries and confirmations."""
    rng = random.Random(11)
    n_msgs = n_events // 4
    every = max(1, n_msgs // n_open)
    per_block = BLOCK // 4
    flagged = 0
    for start in range(0, n_msgs, per_block):
        received, verdicts, queued, delivered = [], [], [], []
        for i in range(start, min(n_msgs, start + per_block)):
            conv = f"c-{i % max(1, n_msgs // 50):06d}"
            user = f"u{i % max(1, n_msgs // 50)}"
            client = {"channel": "clients", "user": user, "display": f"Client {user}"}
            review = i % every == 0 and flagged < n_open
            flagged += review
            text = " ".join(rng.choice(WORDS) for _ in range(10)) + (" guaranteed profit" if review else "")
            mid = f"m-{i:07d}"
            received.append(("message.received", conv, {
                "id": mid, "direction": "inbound", "channel": "clients", "platform_id": str(i), "chat": user,
                "kind": "message", "sender": client, "text": text, "attachments": [], "reply_to": None, "edits": None,
                "sent_at": None, "raw_sha256": "", "client": client, "employee": "ann"}))
            rules = [{"rule": "F-001", "policy": "bench", "action": "flag", "severity": "medium",
                      "title": "Promissory language", "spans": [[len(text) - 17, len(text) - 7]], "sampled": False}]
            verdicts.append(("policy.verdict", conv, {
                "message_id": mid, "action": "flag" if review else "allow", "review": review,
                "rules": rules if review else [], "disclaimers": [], "redactions": [], "policy_version": "bench"}))
            did = f"d-{i:07d}"
            to = {"channel": "staff", "user": "ann", "display": "Ann"}
            queued.append(("delivery.queued", conv, {
                "delivery_id": did, "message_id": mid, "channel": "staff", "to": to,
                "out": {"kind": "message", "text": text, "attachments": [], "reply_to": None, "edits": None,
                        "origin": client, "client": client, "action": "flag" if review else "allow",
                        "rules": ["F-001"] if review else []}}))
            delivered.append(("message.delivered", conv, {"delivery_id": did, "message_id": mid, "channel": "staff",
                                                          "platform_id": f"staff-{i}", "attempt": 1}))
        yield received + verdicts + queued + delivered


async def build(data: Path, n_events: int, n_open: int) -> None:
    """A journal of about `n_events` events with `n_open` open review items, chained and projected."""
    j = await Journal.open(data, checkpoint_every=10**9, checkpoint_seconds=10**9)
    await j.close()
    db = sqlite3.connect(data / "journal.sqlite3", isolation_level=None)
    db.execute("PRAGMA synchronous=OFF")
    prev, seq = GENESIS, 0
    row = db.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
    if row:
        seq, prev = row
    now = time.time() - 3600
    for block in _messages(n_events, n_open):
        records = []
        rows = []
        for kind, conv, body in block:
            seq += 1
            ts = now + seq * 1e-4
            body_json = canonical_json(body)
            h = event_hash(prev, fast_canonical(seq, ts, canonical_str(kind), canonical_str(conv) if conv else "null",
                                                body_json), None)
            rows.append((seq, ts, kind, conv, body_json, prev, h))
            records.append((seq, ts, kind, conv, body, body_json, prev, h))
            prev = h
        db.execute("BEGIN")
        db.executemany("INSERT INTO events(seq, ts, kind, conversation, body_json, prev_hash, hash) VALUES(?,?,?,?,?,?,?)",
                       rows)
        apply_events(db, records)
        db.execute("COMMIT")
    db.close()


async def journal_for(n_events: int, n_open: int) -> Path:
    data = CACHE / f"console-{n_events}-{n_open}"
    done = data / "built"
    if not done.exists():
        if data.exists():
            import shutil
            shutil.rmtree(data)
        data.mkdir(parents=True, mode=0o700)
        t0 = time.perf_counter()
        await build(data, n_events, n_open)
        done.write_text("ok")
        print(f"built a journal of {n_events:,} events ({n_open:,} open items) in {time.perf_counter() - t0:.0f} s"
              f" into {data}", flush=True)
    return data


@asynccontextmanager
async def serving(data: Path, policies: Path) -> AsyncIterator[tuple[Any, Any, list[str]]]:
    """A relay on `data` with a logged-in reviewer: (relay, client session, open item ids)."""
    import aiohttp

    from relay.actions import Workflow
    from relay.app import RelayApp
    from relay.compliance.actions import ACTIONS
    from relay.passwords import hash_password
    from tests.console_support import LOGIN_TOKEN

    cfg = {
        "data_dir": str(data), "listen": {"host": "127.0.0.1", "port": 0},
        "policies": {"dir": str(policies)}, "journal": {"checkpoint_every": 10**9, "checkpoint_seconds": 10**9},
        "channels": {"clients": {"network": "memory", "side": "client"}, "staff": {"network": "memory", "side": "staff"}},
        "employees": {"ann": {"name": "Ann", "staff": {"channel": "staff", "address": "ann"}}},
        "desks": {"desk": {"clients": ["clients"], "members": ["ann"]}},
        "reviewers": {"carol": {"role": "reviewer", "password_hash": hash_password("pw")}},
        "compliance": {"sla": {"flag": "72h"}},
    }
    relay = await RelayApp.start(cfg, workflow=Workflow(ACTIONS, tasks=()))  # no SLA sweeper: it is not what is timed
    try:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
            async with s.get(relay.base_url + "/console/login") as r:
                token = LOGIN_TOKEN.search(await r.text()).group(1)
            async with s.post(relay.base_url + "/console/login", allow_redirects=False,
                              data={"reviewer": "carol", "password": "pw", "login_token": token}) as r:
                assert r.status == 303, r.status
            mids = [r["message_id"] for r in await relay.journal.fetchall(
                "SELECT message_id FROM review_queue WHERE state = 'open'")]
            yield relay, s, mids
    finally:
        await relay.stop()


async def _get(relay: Any, s: Any, path: str) -> float:
    t0 = time.perf_counter()
    async with s.get(relay.base_url + path) as r:
        body = await r.read()
        assert r.status == 200 and len(body) > 1000, (path, r.status)
    return time.perf_counter() - t0


async def measure(small: Path, big: Path, policies: Path) -> dict[str, dict[str, list[float]]]:
    """Both relays serve at once and are asked in turn, so both see the same machine load."""
    out: dict[str, dict[str, list[float]]] = {"small": {}, "big": {}}
    rng = random.Random(5)
    async with serving(small, policies) as a, serving(big, policies) as b:
        for i in range(RUNS + 3):
            for label, (relay, s, mids) in (("small", a), ("big", b)):
                pages = [("queue", "/console/queue"), ("filtered", "/console/queue?rule=F-001&sort=oldest&page=2"),
                         ("item", f"/console/item/{rng.choice(mids)}")]
                for name, path in pages:
                    took = await _get(relay, s, path)
                    if i >= 3:  # warm-up
                        out[label].setdefault(name, []).append(took)
    return out


def _p95(xs: list[float]) -> float:
    return sorted(xs)[max(0, int(round(0.95 * len(xs))) - 1)]


async def run() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        policies = Path(tmp) / "policies"
        policies.mkdir()
        (policies / "bench.yaml").write_text(POLICY)
        small = await journal_for(*SMALL)
        big = await journal_for(*BIG)
        got = await measure(small, big, policies)
        base, full = got["small"], got["big"]
    for name, label in (("queue", "queue page (open, newest)"), ("filtered", "queue page (rule filter, oldest, page 2)"),
                        ("item", "item page")):
        b, f = base[name], full[name]
        bm, fm = statistics.median(b), statistics.median(f)
        print(f"{label}: {BIG[1]:,} open items / {BIG[0]:,} events: median {fm * 1000:.1f} ms, p95 {_p95(f) * 1000:.1f} ms"
              f" (target p95 < 300 ms); {SMALL[1]} open items: median {bm * 1000:.1f} ms, p95 {_p95(b) * 1000:.1f} ms;"
              f" ratio {fm / bm:.2f}x (target <= 2x)", flush=True)


def main() -> None:
    asyncio.run(run())


if __name__ == "__main__":
    main()

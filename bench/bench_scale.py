"""Hot-path cost against journal length: each operation at 100k and at 1M events, ratio 1M/100k.

The journals are bulk-built (a desk of 50 employees, ~4.4 events per message as the hub writes
them: received, verdict, queued, delivered, some receipts, reviews and edits) with the
journal's own chain and projection functions, so they verify and read like written ones, and
are cached in bench/.cache (gitignored) between runs. Each operation is the production code
(an offline RelayApp's hub, outbox, review and handover) against the same journal; the
baseline of each ratio is the same operation on the 10x shorter journal, in the same run.
Reviewers keep up (the 40 newest review items are open at both sizes) and a checkpoint is
signed every 1,000 events, as in a running relay. Target: every ratio at most 1.5x.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import shutil
import sqlite3
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from relay.hub_lookups import inherited_disclaimers, receipt_events
from relay.hub_records import delivery_id_for, message_id_for
from relay.journal import projections, schema, signing
from relay.journal.chain import GENESIS, canonical_json, canonical_parts, canonical_str, link_bytes
from relay.model import Inbound, Party, conversation_id

SIZES = (100_000, 1_000_000)
REPEAT = 30
BUILD_VERSION = "2"
"""Bump when the generated history changes (the cache key also holds the projections version)."""
CACHE = Path(__file__).resolve().parent / ".cache"
POLICIES = Path(__file__).resolve().parents[1] / "policies"
EMPLOYEES = [f"e{n:02d}" for n in range(50)]
MESSAGES_PER_CONVERSATION = 12
BACKLOG = 40
"""Review items still undecided: the newest ones (reviewers keep up), the same at both sizes."""
CHECKPOINT_EVERY = 1000


def _config(data_dir: Path) -> dict[str, Any]:
    return {
        "data_dir": str(data_dir),
        "listen": {"host": "127.0.0.1", "port": 0},
        "policies": {"dir": str(POLICIES), "reload_seconds": 3600},
        "journal": {"synchronous": "NORMAL"},
        "channels": {"clients": {"network": "memory", "side": "client"},
                     "staff": {"network": "memory", "side": "staff"}},
        "employees": {e: {"name": e.upper(), "staff": {"channel": "staff", "address": e}, "groups": ["advisors"]}
                      for e in EMPLOYEES},
        "desks": {"desk": {"clients": ["clients"], "members": list(EMPLOYEES)}},
        "reviewers": {"carol": {"role": "reviewer"}},
    }


class _Builder:
    """Writes events straight into a new journal file: seq, chain and projections as the writer does."""

    def __init__(self, db: sqlite3.Connection, key: Any) -> None:
        self.db = db
        self.key = key
        self.seq = 0
        self.prev = GENESIS
        self.ts = 1.7e9
        self.rows: list[tuple[Any, ...]] = []
        self.records: list[projections.Record] = []

    def add(self, kind: str, body: dict[str, Any], conversation: str | None) -> None:
        self.seq += 1
        self.ts += 0.5
        body_json = canonical_json(body)
        head, tail = canonical_parts(self.ts, canonical_str(kind), "null" if conversation is None else canonical_str(conversation),
                                     body_json)
        h = hashlib.sha256(link_bytes(self.prev, head, self.seq, tail)).hexdigest()
        self.rows.append((self.seq, self.ts, kind, conversation, body_json, self.prev, h))
        self.records.append((self.seq, self.ts, kind, conversation, body, body_json, self.prev, h))
        self.prev = h
        if kind != "checkpoint" and self.seq % CHECKPOINT_EVERY == CHECKPOINT_EVERY - 1:
            self.add("checkpoint", signing.sign_checkpoint(self.key, self.seq, self.prev), None)
        if len(self.rows) >= 5000:
            self.flush()

    def flush(self) -> None:
        self.db.executemany("INSERT INTO events(seq, ts, kind, conversation, body_json, prev_hash, hash)"
                            " VALUES(?,?,?,?,?,?,?)", self.rows)
        errors = projections.apply_events(self.db, self.records)
        assert errors == 0, errors
        self.rows, self.records = [], []


def _party(channel: str, user: str, display: str) -> dict[str, str]:
    return {"channel": channel, "user": user, "display": display}


def _build(path: Path, events: int) -> dict[str, Any]:
    """A journal of about `events` events; returns the targets the operations look up."""
    rnd = random.Random(12)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")
    schema.create_all(db)
    db.executemany("INSERT INTO meta(key, value) VALUES(?, ?)", [("hash", "sha256")])
    schema.mark_projections(db)
    b = _Builder(db, signing.load_or_create(path.parent / "keys"))
    db.execute("BEGIN")
    b.add("policy.loaded", {"version": "v" * 64, "files": {"fin.yaml": "f" * 64}, "dir": str(POLICIES)}, None)
    conversations: list[tuple[str, dict[str, str], str]] = []
    received: list[tuple[str, str, str]] = []  # (message id, channel, platform id) of outbound replies
    delivered: list[str] = []  # platform ids the client network knows (receipt targets)
    replied: list[str] = []  # message ids of delivered replies (reply lookups)
    held: list[str] = []
    undecided: list[tuple[str, str, str]] = []
    n_msg = 0
    while b.seq < events:
        if not conversations or len(conversations) * MESSAGES_PER_CONVERSATION < n_msg:
            k = len(conversations)
            client = _party("clients", f"client-{k}", f"Client {k}")
            conv = conversation_id("clients", f"chat-{k}")
            emp = EMPLOYEES[k % len(EMPLOYEES)]
            b.add("conversation.assigned", {"conversation": conv, "employee": emp, "previous": None, "actor": "relay",
                                            "reason": "desk", "client": client}, conv)
            conversations.append((conv, client, emp))
        conv, client, emp = conversations[rnd.randrange(max(0, len(conversations) - 200), len(conversations))]
        n_msg += 1
        inbound = n_msg % 2 == 1
        channel = "clients" if inbound else "staff"
        pid = f"p-{n_msg}"
        mid = message_id_for(channel, pid)
        staff = _party("staff", emp, emp.upper())
        sender = client if inbound else staff
        kind = "message"
        edits = None
        if not inbound and received and rnd.random() < 0.03:
            kind, edits = "edit", rnd.choice(received[-500:])[2]
        text = f"message {n_msg}: the balance of account {rnd.randrange(10**6)} please, 谢谢"
        b.add("message.received", {
            "id": mid, "direction": "inbound" if inbound else "outbound", "channel": channel, "platform_id": pid,
            "chat": conv, "kind": kind, "sender": sender, "text": text, "attachments": [], "reply_to": None,
            "edits": message_id_for(channel, edits) if edits else None, "reply_to_platform": None,
            "edits_platform": edits, "sent_at": b.ts, "raw_inline": "eyJ0ZXh0IjoiLi4uIn0=", "raw_digest": "ab" * 32,
            "client": client, "employee": emp}, conv)
        review = rnd.random() < 0.01
        action = ("quarantine" if rnd.random() < 0.5 else "flag") if review else "allow"
        rules = [{"rule": "MNPI-001", "policy": "fin", "action": action, "severity": "high", "title": "MNPI",
                  "spans": [[0, 7]], "sampled": False}] if review else []
        b.add("policy.verdict", {"message_id": mid, "action": action, "review": review, "rules": rules,
                                 "disclaimers": ["This conversation is recorded."] if not inbound else [],
                                 "redactions": [], "policy_version": "v" * 64}, conv)
        if not inbound:
            received.append((mid, channel, pid))
        if review:
            undecided.append((mid, conv, action))
            if len(undecided) > BACKLOG:  # the reviewers decide the oldest open item
                old_mid, old_conv, old_action = undecided.pop(0)
                decision = "reject" if old_action == "quarantine" else "compliant"
                b.add("review.decided", {"message_id": old_mid, "decision": decision, "reviewer": "carol",
                                         "reason": "mnpi"}, old_conv)
        if action == "quarantine":
            held.append(mid)
            continue
        to = staff if inbound else client
        did = delivery_id_for(mid, to["channel"], to["user"], kind)
        b.add("delivery.queued", {"delivery_id": did, "message_id": mid, "channel": to["channel"], "to": to,
                                  "out": {"kind": kind, "text": text, "attachments": [], "reply_to": None, "edits": None,
                                          "origin": sender, "client": client, "action": action,
                                          "rules": [r["rule"] for r in rules]}}, conv)
        platform = f"w-{n_msg}"
        b.add("message.delivered", {"delivery_id": did, "message_id": mid, "channel": to["channel"],
                                    "platform_id": platform, "attempt": 1}, conv)
        if not inbound:
            delivered.append(platform)
            replied.append(mid)
            if rnd.random() < 0.4:
                rid = message_id_for("clients", f"r-{n_msg}")
                b.add("delivery.receipt", {"delivery_id": did, "message_id": mid, "channel": "clients",
                                           "platform_id": platform, "status": "status:read", "event_id": rid}, conv)
    b.flush()
    db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return {"events": b.seq, "replies": received[-2000:], "delivered": delivered[-2000:], "replied": replied[-2000:],
            "held": held[-200:],
            "conversations": [c for c, _, e in conversations[-400:] if e in ("e00", "e01")]}


def _journal_dir(events: int) -> tuple[Path, dict[str, Any]]:
    """The cached journal of this size (built on first use)."""
    import json

    key = f"scale-{events}-b{BUILD_VERSION}-p{schema.PROJECTIONS_VERSION}"
    d = CACHE / key
    meta = d / "targets.json"
    if not meta.exists():
        shutil.rmtree(d, ignore_errors=True)
        (d / "data").mkdir(parents=True)
        t0 = time.perf_counter()
        targets = _build(d / "data" / "journal.sqlite3", events)
        meta.write_text(json.dumps(targets))
        print(f"   built {targets['events']} events in {time.perf_counter() - t0:.0f} s ({d})", flush=True)
    return d / "data", json.loads(meta.read_text())


Op = Callable[[int], Awaitable[Any]]


async def _interleaved(ops: list[Op], repeat: int = REPEAT) -> list[float]:
    """Median time of each op (one per journal size) over `repeat` calls on different targets,
    after one untimed pass over the same targets (the figure is the lookup's own cost with its
    pages cached, not the disk's). The sizes take turns call by call, so a change in the
    machine's load hits both alike."""
    for i in range(1, repeat + 1):
        for op in ops:
            await op(i)
    times: list[list[float]] = [[] for _ in ops]
    for i in range(1, repeat + 1):
        for op, got in zip(ops, times):
            t0 = time.perf_counter()
            await op(i)
            got.append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


async def _operations(app: Any, t: dict[str, Any]) -> dict[str, tuple[Op, int]]:
    """The hot-path operations on one relay's journal, each taking a target number."""
    from relay.compliance.handover import handover
    from relay.compliance.review import decide, load_items
    from relay.journal import lookups

    hub, outbox, journal = app.hub, app.outbox, app.journal

    async def resume_rows(_: int) -> None:
        await journal.fetchall(lookups.QUEUED_DELIVERIES)

    async def receipt(i: int) -> None:
        pid = t["delivered"][-1 - i]
        inb = Inbound(channel="clients", platform_id=f"rx-{i}", sender=Party("clients", "x", "x"), chat="x",
                      kind="event", text="status:read", reply_to=pid)
        assert await receipt_events(journal, inb, "m-x"), pid

    async def held(i: int) -> None:
        assert await hub.held_delivery(t["held"][-1 - (i % len(t["held"]))]) is not None

    async def inherited(i: int) -> None:
        _, channel, pid = t["replies"][-1 - i]
        inb = Inbound(channel=channel, platform_id=f"ed-{i}", sender=Party(channel, "e00", "E00"), chat="x",
                      kind="edit", text="fixed", edits=pid)
        assert await inherited_disclaimers(journal, inb)

    async def reply(i: int) -> None:
        outbox._platform_ids.clear()
        assert await outbox._platform_id_of(t["replied"][-1 - i], "clients")

    async def queue(_: int) -> None:
        assert await load_items(journal, pending=True)

    pending = [m for m, item in (await load_items(journal, pending=True)).items() if item.is_open]

    async def review_decide(i: int) -> None:
        await decide(app, pending[-1 - (i % len(pending))], "annotate", "carol", "bench note")

    async def hand(i: int) -> None:
        conv = t["conversations"][i % len(t["conversations"])]
        current = (await app.router.get(conv)).employee
        await handover(app, current, "e01" if current == "e00" else "e00", "bench", conv)

    return {
        "outbox resume query": (resume_rows, REPEAT),
        "delivery receipt lookup": (receipt, REPEAT),
        "held_delivery": (held, REPEAT),
        "edit's inherited disclaimers": (inherited, REPEAT),
        "reply lookup (platform id)": (reply, REPEAT),
        "review queue load": (queue, REPEAT),
        "review decide": (review_decide, REPEAT),
        "handover (one conversation)": (hand, 10),
    }


async def _measure(journals: list[tuple[Path, dict[str, Any]]]) -> dict[str, list[float]]:
    from relay.app import RelayApp

    def starter(data_dir: Path) -> Op:
        async def start(_: int) -> None:
            app = await RelayApp.start(_config(data_dir), offline=True)
            await app.stop()
        return start

    out: dict[str, list[float]] = {}
    out["start-up (offline relay)"] = await _interleaved([starter(d) for d, _ in journals], 5)
    apps = []
    try:
        for d, _ in journals:
            apps.append(await RelayApp.start(_config(d), offline=True))
        ops = [await _operations(app, t) for app, (_, t) in zip(apps, journals)]
        for name, (_, repeat) in ops[0].items():
            out[name] = await _interleaved([o[name][0] for o in ops], repeat)
    finally:
        for app in apps:
            await app.stop()
    return out


def main() -> None:
    results = asyncio.run(_measure([_journal_dir(size) for size in SIZES]))
    small, large = SIZES
    worst = 0.0
    for name, (a, b) in results.items():
        worst = max(worst, b / a)
        print(f"scale: {name:<30} {a * 1e3:8.2f} ms at {small // 1000}k, {b * 1e3:8.2f} ms at {large // 1000}k,"
              f" ratio {b / a:.2f}x")
    print(f"scale: worst ratio 1M/100k {worst:.2f}x (target <= 1.5x; medians of {REPEAT}, sizes interleaved)")
    sys.stdout.flush()


if __name__ == "__main__":
    main()

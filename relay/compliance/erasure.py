"""Applying an erasure plan: `retention.erased` is journaled first, then the bodies are replaced by
their tombstones (and the projections' copies) and the blob bytes deleted; an interrupted erasure
is completed on the next run. The chain still verifies: the verifier accepts exactly the
tombstones whose digests `retention.erased` recorded.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

from relay.compliance.erasure_plan import (LEFTOVER_REASON, ErasurePlan, _assigned_conversation,
                                           _legacy_tombstone, _without_raw, body_digest, plan_erasure,
                                           plan_leftovers, tombstone)
from relay.compliance.holds import active_holds
from relay.compliance.retention import RetentionSettings
from relay.evidence.collect import Ev, iter_events

def _touched(events: list[Ev], tombstones: Mapping[int, dict[str, Any]]) -> set[str]:
    """Conversations whose client display name an erasure of these events may change."""
    out: set[str] = set()
    for ev in events:
        if ev.seq not in tombstones:
            continue
        if ev.kind == "conversation.assigned":
            out.add(_assigned_conversation(ev))
        elif ev.kind == "message.received" and ev.conversation:
            out.add(ev.conversation)
    out.discard("")
    return out


def _rewrite_bodies(db_path: Path, events: list[Ev], tombstones: Mapping[int, dict[str, Any]]) -> list[str]:
    """Replace erased bodies (and the projections' copies) in one transaction. `events` is the
    journal as read before (the events appended since are read here): each conversation touched
    gets the client display name a replay now gives, none once every event naming it is erased.
    Returns those conversations."""
    from relay.journal.projections import client_displays  # here: `relay review --help` stays light

    kinds = {ev.seq: ev.kind for ev in events}
    touched = _touched(events, tombstones)
    db = sqlite3.connect(db_path, timeout=30, isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")
        for seq, body in tombstones.items():
            db.execute("UPDATE events SET body_json=? WHERE seq=?", (canonical(body), seq))
            if kinds.get(seq) == "message.received":
                db.execute("UPDATE messages SET text='', erased=1, attachments_json=?, sender_display=NULL WHERE seq=?",
                           (canonical(body.get("attachments") or []), seq))
                db.execute("DELETE FROM messages_fts WHERE rowid=?", (seq,))
            elif kinds.get(seq) == "delivery.queued":
                db.execute("UPDATE deliveries SET out_json=?, to_json=? WHERE delivery_id=?",
                           (canonical(body.get("out")), canonical(body.get("to")), body.get("delivery_id")))
        if touched:
            last = events[-1].seq if events else 0
            since = db.execute("SELECT kind, conversation, body_json FROM events WHERE seq > ? AND kind IN"
                               " ('message.received', 'conversation.assigned') ORDER BY seq", (last,)).fetchall()
            replay = [(ev.kind, ev.conversation, tombstones.get(ev.seq, ev.body)) for ev in events]
            replay += [(k, c, json.loads(b)) for k, c, b in since]
            for conv, display in client_displays(replay, touched).items():
                db.execute("UPDATE conversations SET client_display=? WHERE id=?", (display, conv))
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    finally:
        db.close()
    return sorted(touched)


async def _rewrite_bodies_pg(journal: Any, events: list[Ev], tombstones: Mapping[int, dict[str, Any]]) -> list[str]:
    """`_rewrite_bodies` on the PostgreSQL journal: the same changes in one transaction, under
    the chain-head lock so no relay's group commit interleaves with the replay read here."""
    import asyncpg

    from relay.journal.projections import client_displays

    kinds = {ev.seq: ev.kind for ev in events}
    touched = _touched(events, tombstones)
    db = await asyncpg.connect(journal.url)
    try:
        async with db.transaction():
            await db.execute("SELECT 1 FROM chain_head WHERE id=1 FOR UPDATE")
            for seq, body in tombstones.items():
                await db.execute("UPDATE events SET body_json=$1 WHERE seq=$2", canonical(body), seq)
                if kinds.get(seq) == "message.received":
                    await db.execute("UPDATE messages SET text='', erased=1, attachments_json=$1, sender_display=NULL"
                                     " WHERE seq=$2", canonical(body.get("attachments") or []), seq)
                elif kinds.get(seq) == "delivery.queued":
                    await db.execute("UPDATE deliveries SET out_json=$1, to_json=$2 WHERE delivery_id=$3",
                                     canonical(body.get("out")), canonical(body.get("to")), body.get("delivery_id"))
            if touched:
                last = events[-1].seq if events else 0
                since = await db.fetch("SELECT kind, conversation, body_json FROM events WHERE seq > $1 AND kind IN"
                                       " ('message.received', 'conversation.assigned') ORDER BY seq", last)
                replay = [(ev.kind, ev.conversation, tombstones.get(ev.seq, ev.body)) for ev in events]
                replay += [(k, c, json.loads(b)) for k, c, b in since]
                for conv, display in client_displays(replay, touched).items():
                    await db.execute("UPDATE conversations SET client_display=$1 WHERE id=$2", display, conv)
    finally:
        await db.close()
    return sorted(touched)


async def _rewrite(journal: Any, events: list[Ev], tombstones: Mapping[int, dict[str, Any]]) -> list[str]:
    if getattr(journal, "dialect", "sqlite") == "postgresql":
        return await _rewrite_bodies_pg(journal, events, tombstones)
    return await asyncio.to_thread(_rewrite_bodies, journal.path, events, tombstones)


async def _delete(journal: Any, shas: Iterable[str]) -> int:
    if getattr(journal, "dialect", "sqlite") == "postgresql":
        return await journal.delete_blobs(list(shas))
    return await asyncio.to_thread(_delete_blobs, journal, shas)


def canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


async def _events(journal: Any) -> list[Ev]:
    return await iter_events(journal)


async def complete_pending(journal: Any) -> int:
    """Finish erasures whose `retention.erased` committed but whose bodies were not yet replaced
    (a crash in between); the tombstone is recomputed and must match the recorded digest."""
    events = await _events(journal)
    by_seq = {ev.seq: ev for ev in events}
    todo: dict[int, dict[str, Any]] = {}
    for ev in events:
        if ev.kind != "retention.erased":
            continue
        digests = ev.body.get("digests") or {}
        for s in ev.body.get("seqs") or []:
            target = by_seq.get(int(s))
            want = digests.get(str(s))
            if target is None or want is None or body_digest(target.body) == want:
                continue
            reason = str(ev.body.get("reason", ""))
            if reason == LEFTOVER_REASON:
                candidates = [_without_raw(target.body)]
            else:
                candidates = [tombstone(target.kind, target.body, reason),
                              _legacy_tombstone(target.kind, target.body, reason)]
            for stone in candidates:
                if body_digest(stone) == want:
                    todo[target.seq] = stone
                    break
    if todo:
        await _rewrite(journal, events, todo)
    return len(todo)


def _delete_blobs(journal: Any, shas: Iterable[str]) -> int:
    n = 0
    for sha in shas:
        try:
            journal.blobs.path(sha).unlink()
            n += 1
        except FileNotFoundError:
            pass
    return n


async def apply_plan(journal: Any, plan: ErasurePlan, reason: str, actor: str,
                     events: list[Ev] | None = None) -> dict[str, Any]:
    """Journal `retention.erased`, then replace the bodies and delete the blob bytes. `events`:
    the journal as the plan was made from (read here when not given)."""
    if not plan.seqs:
        return {"erased": plan.summary(), "seq": None}
    if events is None:
        events = await _events(journal)
    ev = await journal.append("retention.erased", plan.event_body(reason, actor))
    touched = await _rewrite(journal, events, plan.tombstones)
    deleted = await _delete(journal, plan.blobs)
    return {"erased": plan.summary(), "seq": ev.seq, "blobs_deleted": deleted, "touched": touched}


async def run_retention(journal: Any, settings: RetentionSettings, actor: str, *, at: float | None = None,
                        dry_run: bool = False) -> dict[str, Any]:
    """Erase everything past its retention class and on no legal hold (`at` = now)."""
    await complete_pending(journal)
    events = await _events(journal)
    leftovers = plan_leftovers(events)
    if leftovers.seqs and not dry_run:
        await apply_plan(journal, leftovers, LEFTOVER_REASON, actor, events)
        events = await _events(journal)
    holds = active_holds(events)
    plan = plan_erasure(events, settings, time.time() if at is None else at, holds)
    if dry_run:
        return {"dry_run": True, "would_erase": plan.summary(), "held_by": plan.held}
    result = await apply_plan(journal, plan, "retention period ended", actor, events)
    result["held_by"] = plan.held
    return result

"""The scheduled WORM copy: `relay run` copies new events, blobs and checkpoints to
`journal.replica` every `journal.replica.every` (default 1m).

A successful copy is not journaled (each record would need copying in turn); the copy's head
and lag are on `/metrics`, and a failure is journaled (`replica.failed`), alerts compliance
once and turns the `replica` check on `/healthz` red until a copy succeeds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from relay.compliance.retention import RetentionError, parse_duration
from relay.compliance.review import alert
from relay.journal import replica

log = logging.getLogger("relay.compliance.replication")
CHECK = "replica"


def interval_of(raw: Any) -> float:
    block = (raw.get("journal") or {}).get("replica") or {}
    try:
        return parse_duration(block.get("every", 60), "journal.replica.every")
    except RetentionError as exc:
        raise replica.ReplicaError(str(exc)) from exc


class Replicator:
    def __init__(self, app: Any) -> None:
        self.app = app
        self.failing: str | None = None

    async def run_once(self) -> dict[str, Any]:
        app = self.app
        target = app.config.replica
        now = time.time()
        try:
            result = await replica.sync(app.journal, target)
        except Exception as exc:  # a full disk, a read-only mount, another journal's copy…
            why = f"{type(exc).__name__}: {exc}"
            app.health.set_check(CHECK, False, f"copy to {target.name} failed: {why}", now)
            if self.failing != why:
                self.failing = why
                log.error("WORM copy to %s failed: %s", target.name, why)
                await app.journal.append("replica.failed", {"target": target.name, "error": why})
                await alert(app, f"[relay replica] WORM copy to {target.name} FAILED: {why}", key=f"replica:{now}")
            return {"ok": False, "error": why}
        self.failing = None
        head = app.journal.head[0]
        app.health.set_check(CHECK, True, f"copy head seq {result.head}", now)
        app.health.set_gauge("relay_replica_head", result.head, "Last seq copied to the WORM copy.")
        app.health.set_gauge("relay_replica_lag_events", max(0, head - result.head),
                             "Journal events not yet in the WORM copy.")
        return {"ok": True, **result.to_dict()}


async def run_replicator(app: Any) -> None:
    """Background task for `relay run` (does nothing without `journal.replica`)."""
    if app.config.replica is None:
        return
    if not hasattr(app.journal, "path"):
        log.error("journal.replica: the WORM copy reads the SQLite journal; on PostgreSQL use the database's own"
                  " backups (not copied)")
        app.health.set_check(CHECK, False, "journal.replica is not supported on the PostgreSQL journal yet", time.time())
        return
    every = interval_of(app.config.raw)
    r = Replicator(app)
    while True:
        try:
            await r.run_once()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("WORM copy run failed")
        await asyncio.sleep(every)


async def replicate_action(app: Any, params: dict[str, Any]) -> dict[str, Any]:
    """`journal.replicate` admin action: one copy run now."""
    if app.config.replica is None:
        return {"ok": False, "error": "no journal.replica configured"}
    return await Replicator(app).run_once()

"""Scheduled journal verification (SEC 17a-4(f)(2)(i)(B): the system verifies its own storage).

`relay run` verifies incrementally every `journal.verify_every` (default 1h) and in full every
`journal.verify_full_every` (default 7d), against the configured witnesses too; each run is
journaled as `journal.verified`, shown on
`/healthz` and `/metrics`, and a failure alerts compliance (`compliance.alerts`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Mapping

from relay.compliance.retention import RetentionError, parse_duration
from relay.compliance.review import alert
from relay.journal import Journal, verified

log = logging.getLogger("relay.compliance.verification")
CHECK = "journal_verify"


class VerificationError(Exception):
    """A `journal.verify_*` setting that cannot be used; the message names it."""


@dataclass(frozen=True)
class VerifySchedule:
    every: float = 3600.0
    full_every: float = 7 * 86400.0


def schedule_of(raw: Mapping[str, Any]) -> VerifySchedule:
    block = raw.get("journal") or {}
    try:
        every = parse_duration(block.get("verify_every", 3600), "journal.verify_every")
        full = parse_duration(block.get("verify_full_every", 7 * 86400), "journal.verify_full_every")
    except RetentionError as exc:
        raise VerificationError(str(exc)) from exc
    if every <= 0 or full <= 0:
        raise VerificationError("journal.verify_every and journal.verify_full_every must be more than 0")
    return VerifySchedule(every, full)


def full_due(app: Any, schedule: VerifySchedule, now: float) -> bool:
    mark = verified.load(app.journal.data_dir)
    return mark is None or mark.full_at is None or now - mark.full_at >= schedule.full_every


class Verifier:
    """One per running relay: remembers the last failure alerted, so a fault alerts once. After a
    failure every run is full until one passes: an incremental run starts after the recorded
    checkpoint and could pass while the fault found before it is still there."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.alerted: tuple[Any, ...] | None = None

    async def run_once(self, full: bool | None = None) -> dict[str, Any]:
        """Verify (full when due, or as asked), journal `journal.verified`, report, alert on failure."""
        app = self.app
        started = time.time()
        if full is None:
            full = self.alerted is not None or full_due(app, schedule_of(app.config.raw), started)
        t0 = time.perf_counter()
        try:
            witnesses = app.config.witnesses if isinstance(app.journal, Journal) else ()  # PostgreSQL: not yet
            report = await app.journal.verify_recorded(full=full, witnesses=witnesses)
            result = report.to_dict()
        except Exception as exc:  # an unreadable database or blob store is a failed verification too
            log.exception("journal verification could not run")
            result = {"ok": False, "problem": "verify failed", "detail": repr(exc), "first_bad_seq": None,
                      "mode": "full" if full else "incremental", "from_seq": None, "head": None, "count": 0}
        duration = time.perf_counter() - t0
        body = {
            "ok": bool(result["ok"]), "mode": result["mode"], "from_seq": result.get("from_seq"),
            "to_seq": result.get("head"), "count": result.get("count", 0), "problem": result.get("problem"),
            "first_bad_seq": result.get("first_bad_seq"), "detail": result.get("detail", ""),
            "duration_s": round(duration, 6), "started": started,
        }
        await app.journal.append("journal.verified", body)
        detail = (f"{body['mode']} seq {body['from_seq']}..{body['to_seq']} ok" if body["ok"] else
                  f"seq {body['first_bad_seq']}: {body['problem']} ({body['detail']})")
        # an incremental pass does not clear a fault a full run found before the recorded checkpoint
        healthy = body["ok"] and (full or self.alerted is None)
        if body["ok"] and not healthy:
            detail = f"{detail}; the fault found earlier stands until a full verify passes"
        app.health.set_check(CHECK, healthy, detail, started)
        app.health.set_gauge("relay_journal_verified_seq", float(body["to_seq"] or 0) if healthy else 0.0,
                             "Last seq the scheduled journal verification found good (0 after a failure).")
        app.health.set_gauge("relay_journal_verify_seconds", duration, "Duration of the last journal verification.")
        app.health.set_gauge("relay_journal_verify_failures", float(not healthy),
                             "1 while the last journal verification failed.")
        if healthy:
            self.alerted = None
        elif not body["ok"]:
            fault = (body["first_bad_seq"], body["problem"])
            log.error("journal verification failed: seq %s: %s", *fault)
            if self.alerted != fault:
                self.alerted = fault
                await alert(app, f"[relay verify] journal verification FAILED ({body['mode']}): {detail}."
                                 " Run `relay journal verify --full` and see the README's 'Verification'.",
                            key=f"verify:{fault[0]}:{fault[1]}:{int(started)}")
        return body


def first_delay(app: Any, schedule: VerifySchedule, now: float) -> float:
    """Due `verify_every` after the last good verify (so restarts do not postpone it forever);
    a journal never verified waits one interval from start."""
    mark = verified.load(app.journal.data_dir)
    if mark is None:
        return schedule.every
    return max(0.0, min(mark.at + schedule.every - now, schedule.every))


async def run_verifier(app: Any) -> None:
    """Background task for `relay run`: a run every `journal.verify_every`, full when due."""
    schedule = schedule_of(app.config.raw)
    verifier = Verifier(app)
    app.verifier = verifier
    await asyncio.sleep(first_delay(app, schedule, time.time()))
    while True:
        try:
            await verifier.run_once()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("scheduled journal verification failed to run")
        await asyncio.sleep(schedule.every)


async def verify_action(app: Any, params: dict[str, Any]) -> dict[str, Any]:
    """`journal.verify` admin action: one run now (`full`: true for the whole chain)."""
    verifier = getattr(app, "verifier", None) or Verifier(app)
    full = params.get("full")
    return await verifier.run_once(None if full is None else bool(full))

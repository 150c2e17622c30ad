"""Admin actions for retention runs, legal holds and erasure requests (supervisors and admins)."""

from __future__ import annotations

from typing import Any

from relay.actions import AdminError
from relay.compliance.erasure import run_retention
from relay.compliance.holds import add_hold, release_hold, request_erasure
from relay.compliance.retention import RetentionError, settings_of
from relay.compliance.review import compliance_settings


def _authorize(app: Any, actor: str) -> str:
    """Holds and erasure requests are for supervisors and admins (named under reviewers:)."""
    r = compliance_settings(app.config.raw).reviewer(actor)
    if r.role not in ("supervisor", "admin"):
        raise AdminError(f"{actor} has role {r.role}; legal holds and erasure requests need a supervisor or admin")
    return r.id


async def retention_run(app: Any, params: dict[str, Any]) -> dict[str, Any]:
    at = params.get("at")
    try:
        result = await run_retention(app.journal, settings_of(app), str(params.get("actor") or "retention"),
                                     at=float(at) if at is not None else None, dry_run=bool(params.get("dry_run")))
    except RetentionError as exc:
        raise AdminError(str(exc)) from exc
    app.router.forget(result.get("touched") or ())
    return result


async def hold_add(app: Any, params: dict[str, Any]) -> dict[str, Any]:
    _authorize(app, str(params.get("actor", "")))
    try:
        return await add_hold(app.journal, str(params.get("scope", "")), str(params.get("value", "")),
                              str(params.get("reason", "")), str(params.get("actor", "")), app.config.employees)
    except RetentionError as exc:
        raise AdminError(str(exc)) from exc


async def hold_release(app: Any, params: dict[str, Any]) -> dict[str, Any]:
    _authorize(app, str(params.get("actor", "")))
    try:
        return await release_hold(app.journal, str(params.get("hold_id", "")), str(params.get("reason", "")),
                                  str(params.get("actor", "")))
    except RetentionError as exc:
        raise AdminError(str(exc)) from exc


async def erase_request(app: Any, params: dict[str, Any]) -> dict[str, Any]:
    _authorize(app, str(params.get("actor", "")))
    try:
        return await request_erasure(app.journal, str(params.get("client", "")), str(params.get("reason", "")),
                                     str(params.get("actor", "")))
    except RetentionError as exc:
        raise AdminError(str(exc)) from exc

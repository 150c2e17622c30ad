"""Release or reject a held (quarantined) message: the two decisions that move it out of the queue
through the hub (`relay.compliance.review` records the other decisions)."""

from __future__ import annotations

from typing import Any

from relay.actions import AdminError


async def _open_item(relay: Any, params: dict[str, Any]) -> tuple[str, str, str]:
    """(message id, actor, action) of an undecided review item, or an AdminError saying why not."""
    mid = str(params.get("message_id", ""))
    rows = await relay.journal.fetchall("SELECT state, action FROM review_queue WHERE message_id = ?", (mid,))
    if not rows:
        raise AdminError(f"no review item {mid!r}")
    if rows[0]["state"] != "open":
        raise AdminError(f"review item {mid} is already decided ({rows[0]['state']})")
    return mid, str(params.get("actor", "")) or "cli", rows[0]["action"]


async def release(relay: Any, params: dict[str, Any]) -> dict[str, Any]:
    mid, actor, action = await _open_item(relay, params)
    if action != "quarantine":
        raise AdminError(f"review item {mid} was not held (action {action}); use a review decision instead")
    try:
        d = await relay.hub.release(mid, actor, str(params.get("reason", "")))
    except LookupError as exc:
        raise AdminError(str(exc)) from exc
    return {"message_id": mid, "decision": "release", "delivery_id": d.delivery_id, "queued": not relay.offline}


async def reject(relay: Any, params: dict[str, Any]) -> dict[str, Any]:
    mid, actor, _ = await _open_item(relay, params)
    try:
        await relay.hub.reject(mid, actor, str(params.get("reason", "")))
    except LookupError as exc:
        raise AdminError(str(exc)) from exc
    return {"message_id": mid, "decision": "reject"}

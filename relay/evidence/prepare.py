"""`evidence.prepare`: before an export, sign the journal head and journal who exports what."""

from __future__ import annotations

from typing import Any


async def prepare(app: Any, params: dict[str, Any]) -> dict[str, Any]:
    await app.journal.checkpoint()
    ev = await app.journal.append("admin.action", {"actor": str(params.get("actor") or ""),
                                                   "action": "journal.export", "args": params.get("args") or {}})
    return {"seq": ev.seq}

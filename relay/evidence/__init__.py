"""Evidence for a regulator: filtered exports in three formats, a signed manifest, offline
verification and full-text search over the journal."""

from relay.evidence.collect import ExportFilter, FilterError, parse_time
from relay.evidence.export import FORMATS, ExportError, ExportResult, parse_formats, write_export
from relay.evidence.search import SearchQuery, search
from relay.evidence.verify import ExportReport, verify_export

__all__ = [
    "FORMATS", "ExportError", "ExportFilter", "ExportReport", "ExportResult", "FilterError",
    "SearchQuery", "parse_formats", "parse_time", "search", "verify_export", "write_export",
]


def _register() -> None:
    """`evidence.prepare`: before an export, sign the journal head and journal who exports what."""
    from typing import Any

    from relay.admin import admin_action

    @admin_action("evidence.prepare")
    async def _prepare(app: Any, params: dict[str, Any]) -> dict[str, Any]:
        await app.journal.checkpoint()
        ev = await app.journal.append("admin.action", {"actor": str(params.get("actor") or ""),
                                                       "action": "journal.export", "args": params.get("args") or {}})
        return {"seq": ev.seq}


_register()

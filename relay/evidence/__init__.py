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


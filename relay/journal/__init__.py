"""Tamper-evident event journal: hash-chained SQLite events, blobs, signed checkpoints, projections.

What lives where: `journal` (open, append, checkpoint, rebuild), `writer` (the group-commit
writer task), `reads` (queries, iteration, verify), `opening` (writer lock, pragmas, schema,
key check), `chain` (canonical JSON and hashes), `blobs`, `checkpoints` and `signing`,
`projections` (derived tables), `verify`, `export`, `settings`.
"""

from relay.journal.chain import Event, canonical_json
from relay.journal.journal import Journal
from relay.journal.opening import JournalError
from relay.journal.verify import VerifyReport
from relay.journal.writer import JournalStats

__all__ = ["Event", "Journal", "JournalError", "JournalStats", "VerifyReport", "canonical_json"]

"""Tamper-evident event journal: hash-chained SQLite events, blobs, signed checkpoints, projections."""

from relay.journal.chain import Event, canonical_json
from relay.journal.journal import Journal
from relay.journal.opening import JournalError
from relay.journal.verify import VerifyReport
from relay.journal.writer import JournalStats

__all__ = ["Event", "Journal", "JournalError", "JournalStats", "VerifyReport", "canonical_json"]

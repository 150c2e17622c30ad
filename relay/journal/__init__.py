"""Tamper-evident event journal: hash-chained SQLite events, blobs, signed checkpoints, projections."""

from relay.journal.chain import Event, canonical_json
from relay.journal.journal import Journal, JournalError, JournalStats
from relay.journal.verify import VerifyReport

__all__ = ["Event", "Journal", "JournalError", "JournalStats", "VerifyReport", "canonical_json"]

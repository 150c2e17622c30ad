"""Reading the events an export covers in seq order, a bounded chunk at a time.

Keyset pagination (`collect.event_chunks`) on the journal's read-only connection: memory holds
one chunk, and a long export does not hold a read transaction open against the running relay's WAL.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import AsyncIterator

from relay.evidence.collect import EVENT_COLUMNS, Ev, Reader, event_chunks, row_to_ev


@dataclass(frozen=True)
class Scope:
    """The events an export reads: seq ≤ `upto` (the head when it started, so events appended
    meanwhile are not half included) and, for a filtered export, only the candidate
    `conversations` plus every erasure and checkpoint."""

    upto: int
    conversations: frozenset[str] | None = None

    def condition(self) -> tuple[str, tuple[object, ...]]:
        if self.conversations is None:
            return "", ()
        return (" AND (conversation IN (SELECT value FROM json_each(?)) OR kind IN ('retention.erased', 'checkpoint'))",
                (json.dumps(sorted(self.conversations)),))


async def head_seq(reader: Reader) -> int:
    rows = await reader.fetchall("SELECT MAX(seq) AS n FROM events")
    return int(rows[0]["n"] or 0) if rows else 0


async def scan(reader: Reader, scope: Scope, kind: str | None = None, chunk: int = 100) -> AsyncIterator[list[Ev]]:
    """The scope's events (optionally of one kind) in seq order, `chunk` at a time."""
    where, params = scope.condition()
    if kind is not None:
        where += " AND kind = ?"
        params += (kind,)
    async for events in event_chunks(reader, where, params, upto=scope.upto, chunk=chunk):
        yield events


async def events_at(reader: Reader, seqs: list[int], chunk: int = 500) -> dict[int, Ev]:
    """The events with these seqs (primary-key lookups)."""
    out: dict[int, Ev] = {}
    for i in range(0, len(seqs), chunk):
        part = seqs[i:i + chunk]
        for r in await reader.fetchall(f"{EVENT_COLUMNS} WHERE seq IN ({','.join('?' * len(part))})", tuple(part)):
            out[int(r["seq"])] = row_to_ev(r)
    return out

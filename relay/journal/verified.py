"""The record of the last good verification: the signed checkpoint an incremental verify starts after.

Kept in `<data_dir>/verified.json` (0600), written by whoever verified (the CLI or `relay run`),
so a read-only verify can record its result too. The checkpoint's stored hash is compared on
every incremental run; what lies before it is re-checked by a full verify (`--full`, weekly).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from relay.journal.blobs import write_durably

FILE_NAME = "verified.json"


@dataclass(frozen=True)
class VerifiedMark:
    seq: int
    """Seq of the last signed checkpoint event a verify found good."""
    hash: str
    at: float
    """When that verify ran (time.time())."""
    full_at: float | None = None
    """When the last full verify succeeded."""


def load(data_dir: Path) -> VerifiedMark | None:
    """The recorded mark, or None (no verify yet, or an unreadable file: then verify in full)."""
    try:
        doc = json.loads((data_dir / FILE_NAME).read_text())
        full_at = doc.get("full_at")
        return VerifiedMark(int(doc["seq"]), str(doc["hash"]), float(doc["at"]),
                            None if full_at is None else float(full_at))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def save(data_dir: Path, mark: VerifiedMark) -> None:
    write_durably(data_dir / FILE_NAME, json.dumps(asdict(mark), sort_keys=True).encode(), mode=0o600)

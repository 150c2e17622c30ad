"""Checkpoint files: the signed head, copied outside the database so a cut-off tail is noticed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from relay.journal.blobs import fsync_dir, write_durably
from relay.private_files import private_dir


def file_name(seq: int) -> str:
    return f"checkpoint-{seq:012d}.json"


def write(directory: Path, record: dict[str, Any]) -> Path:
    """`record` = checkpoint body plus the checkpoint event's own `seq`, `hash` and `ts`."""
    if not directory.is_dir():
        private_dir(directory)
        fsync_dir(directory.parent)
    path = directory / file_name(int(record["seq"]))
    write_durably(path, json.dumps(record, sort_keys=True, indent=1).encode())
    return path


MAX_FILE_BYTES = 64 * 1024
"""A checkpoint file is a few hundred bytes; a bigger one is not read (and fails as unreadable)."""


def read_all(directory: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Every readable checkpoint file, by seq; an unreadable one is returned with an empty dict."""
    if not directory.is_dir():
        return []
    found: list[tuple[Path, dict[str, Any]]] = []
    for path in sorted(directory.glob("checkpoint-*.json")):
        try:
            if path.stat().st_size > MAX_FILE_BYTES:
                raise ValueError("too large")
            record = json.loads(path.read_text())
            if not isinstance(record, dict):
                record = {}
        except (OSError, ValueError):
            record = {}
        found.append((path, record))
    return found

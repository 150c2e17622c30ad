"""Writing an evidence export: JSON lines of events, EML per message, HTML per conversation.

The directory is complete once `manifest.json` is written last: it digests every other file,
names the covering journal checkpoint and is signed with the journal key.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from relay.evidence.collect import ExportFilter, Reader, candidate_conversations, iso
from relay.evidence.index import IndexWriter
from relay.evidence.manifest import write_manifest
from relay.evidence.outputs import Outputs
from relay.evidence.plan import Plan
from relay.evidence.scan import Scope, head_seq
from relay.evidence.writers import blob_path, covering_checkpoint, safe_name, write_events, write_messages
from relay.private_files import DIR_MODE, private_dir

__all__ = ["FORMATS", "ExportError", "ExportResult", "blob_path", "checkpoint_record", "parse_formats", "safe_name",
           "write_export"]

FORMATS = ("jsonl", "eml", "html")


class ExportError(ValueError):
    """The export cannot be written as asked (e.g. the target directory is not empty)."""


def parse_formats(values: Iterable[str] | None) -> tuple[str, ...]:
    """`--format jsonl,eml` or repeated flags; `all` or nothing means all three."""
    chosen: list[str] = []
    for value in values or ():
        for part in value.split(","):
            part = part.strip().lower()
            if not part:
                continue
            if part == "all":
                chosen.extend(FORMATS)
            elif part in FORMATS:
                chosen.append(part)
            else:
                raise ExportError(f"unknown export format {part!r} (choose from {', '.join(FORMATS)}, all)")
    return tuple(f for f in FORMATS if f in chosen) or FORMATS


def checkpoint_record(ev: Any) -> dict[str, Any] | None:
    """The covering checkpoint as the journal's checkpoint files hold it: its signed body plus
    the event's own seq, ts, prev_hash and hash (so its link hash can be recomputed)."""
    if ev is None:
        return None
    return {**ev.body, "seq": ev.seq, "ts": ev.ts, "prev_hash": ev.prev_hash, "hash": ev.hash}


@dataclass(frozen=True)
class ExportResult:
    directory: Path
    manifest: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        m = self.manifest
        return {"directory": str(self.directory), "files": len(m["files"]), "counts": m["counts"],
                "formats": m["formats"], "checkpoint_seq": (m.get("checkpoint") or {}).get("seq"), "head": m["head"],
                "public_key": m["public_key"]}


def _prepare(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"{out}: exists and is not an empty directory; choose a new export directory")
    private_dir(out)
    os.chmod(out, DIR_MODE)  # also an empty directory the user made: an export is the record


async def write_export(reader: Reader, out: Path, flt: ExportFilter, key: Ed25519PrivateKey, *,
                       formats: tuple[str, ...] = FORMATS, restricted_clients: Mapping[str, int] | None = None,
                       include_restricted: bool = False, actor: str = "", hmac: bool = False,
                       now: float | None = None, progress: Callable[[str], None] | None = None,
                       progress_every: int = 10000, index: bool = False) -> ExportResult:
    """Select by `flt`, render the chosen formats into `out` (new or empty) and sign a manifest.

    Streams: one pass settles which messages are exported (`Plan`), a second writes the events
    and blobs in seq order, a third the EML files and transcripts conversation by conversation;
    memory holds a chunk of events (one conversation when HTML is asked for) and the manifest's
    list of files with their digests, which is signed as one document. `now` is the
    export time written into transcripts and the manifest (default: the clock); `progress`
    receives a line every `progress_every` events or messages. `index` adds `index.csv` and
    `index.json` (relay/evidence/index.py).
    """
    _prepare(out)
    head = await head_seq(reader)
    convs = await candidate_conversations(reader, flt)
    scope = Scope(head, None if convs is None else frozenset(convs))
    plan = Plan(flt, restricted_clients or {}, include_restricted)
    try:
        await plan.build(reader, scope, _ticker(progress, progress_every, "read {n} events of at most %d" % head))
        outputs = Outputs(out)
        events, top = await write_events(reader, plan, scope, outputs, formats,
                                         _ticker(progress, progress_every, "wrote {n} events of at most %d" % head))
        exported_at = iso(time.time() if now is None else now)
        rows = IndexWriter(outputs) if index else None
        await write_messages(reader, plan, outputs, formats, exported_at,
                             _ticker(progress, progress_every, "wrote {n} of %d messages" % plan.messages), index=rows)
        if rows is not None:
            rows.close()
        await _check_not_erased_meanwhile(reader, head, out)
        checkpoint = await covering_checkpoint(reader, head, top)
        meta = {
            "created": exported_at,
            "actor": actor,
            "filters": flt.as_dict(),
            "formats": list(formats),
            "include_restricted": include_restricted,
            "counts": {"events": events, "messages": plan.messages,
                       "conversations": len(plan.conversations), "withheld_restricted": plan.withheld},
            "journal": {"hmac": hmac},
            "checkpoint": checkpoint_record(checkpoint),
            "head": {"seq": plan.head[0], "hash": plan.head[1]},
        }
    finally:
        plan.close()
    manifest = write_manifest(out, key, meta, outputs.digests)
    return ExportResult(out, manifest)


async def _check_not_erased_meanwhile(reader: Reader, head: int, out: Path) -> None:
    """The passes read bodies after the first one fixed the head: if retention erased events up
    to that head in between, some bodies written are tombstones whose `retention.erased` lies
    past the head, and the export would not verify. Refuse it (no manifest: incomplete)."""
    rows = await reader.fetchall(
        "SELECT seq, body_json FROM events WHERE kind = 'retention.erased' AND seq > ?", (head,))
    for row in rows:
        seqs = json.loads(row["body_json"]).get("seqs") or []
        if any(int(s) <= head for s in seqs):
            raise ExportError(f"retention erased events while the export was written (retention.erased seq "
                              f"{row['seq']}); {out} is incomplete (no manifest): export again into a new directory")


def _ticker(progress: Callable[[str], None] | None, every: int, line: str) -> Callable[[int], None] | None:
    """A counter for one pass: calls `progress` with `line` (`{n}`: the count) each time the
    count passes another multiple of `every`."""
    if progress is None:
        return None
    every = max(1, every)
    last = [0]

    def tick(n: int) -> None:
        if n // every > last[0] // every:
            progress(line.format(n=n))
        last[0] = n
    return tick

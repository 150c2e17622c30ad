"""Writing an evidence export: JSON lines of events, EML per message, HTML per conversation.

The directory is complete once `manifest.json` is written last: it digests every other file,
names the covering journal checkpoint and is signed with the journal key.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from relay.evidence.collect import ExportFilter, Reader, Selection, iso, select
from relay.evidence.eml import render_eml
from relay.evidence.manifest import write_manifest
from relay.evidence.transcript import render_transcript

FORMATS = ("jsonl", "eml", "html")
_SAFE = re.compile(r"[^A-Za-z0-9._-]")


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


def blob_path(sha: str) -> str:
    """Where a blob goes in an export: `blobs/<first two hex digits>/<sha256>`, as in the journal."""
    name = safe_name(sha)
    return f"blobs/{name[:2]}/{name}"


def checkpoint_record(ev: Any) -> dict[str, Any] | None:
    """The covering checkpoint as the journal's checkpoint files hold it: its signed body plus
    the event's own seq, ts, prev_hash and hash (so its link hash can be recomputed)."""
    if ev is None:
        return None
    return {**ev.body, "seq": ev.seq, "ts": ev.ts, "prev_hash": ev.prev_hash, "hash": ev.hash}


def safe_name(text: str, limit: int = 80) -> str:
    return (_SAFE.sub("_", text).strip("._") or "file")[:limit]


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
    out.mkdir(parents=True, exist_ok=True)


async def _blob_map(reader: Reader, shas: Iterable[str]) -> dict[str, bytes | None]:
    out: dict[str, bytes | None] = {}
    for sha in shas:
        if sha and sha not in out:
            out[sha] = await reader.get_blob(sha)
    return out


async def write_export(reader: Reader, out: Path, flt: ExportFilter, key: Ed25519PrivateKey, *,
                       formats: tuple[str, ...] = FORMATS, restricted_clients: Mapping[str, int] | None = None,
                       include_restricted: bool = False, actor: str = "", hmac: bool = False) -> ExportResult:
    """Select by `flt`, render the chosen formats into `out` (new or empty) and sign a manifest."""
    _prepare(out)
    sel: Selection = await select(reader, flt, restricted_clients, include_restricted)
    erased_msgs = {m.id for m in sel.messages if m.erased is not None}
    att_shas = [str(a.get("sha256") or "") for m in sel.messages if m.id not in erased_msgs for a in m.attachments]
    blobs = await _blob_map(reader, att_shas)
    if "jsonl" in formats:
        with (out / "events.jsonl").open("w", encoding="utf-8") as fh:
            for ev in sel.events:
                fh.write(json.dumps(ev.as_json(), sort_keys=True, ensure_ascii=False) + "\n")
        raw = await _blob_map(reader, [str(m.body.get("raw_sha256") or "") for m in sel.messages if m.id not in erased_msgs])
        for sha, data in {**blobs, **raw}.items():
            if data is not None:
                target = out / blob_path(sha)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
    if "eml" in formats:
        for m in sel.messages:
            folder = out / "eml" / safe_name(m.conversation)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{m.seq:08d}-{safe_name(m.id)}.eml").write_bytes(render_eml(m, blobs))
    exported_at = iso(time.time())
    if "html" in formats:
        links: dict[str, str] = {}
        for m in sel.messages:
            for a in m.attachments:
                sha = str(a.get("sha256") or "")
                data = blobs.get(sha)
                if data is None or sha in links:
                    continue
                rel = f"attachments/{safe_name(sha)}/{safe_name(str(a.get('name') or 'attachment'))}"
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
                (out / rel).write_bytes(data)
                links[sha] = "../" + rel
        (out / "transcripts").mkdir(exist_ok=True)
        for conv, msgs in sel.conversations().items():
            page = render_transcript(conv, msgs, sel.assignments.get(conv, []), links, exported_at)
            (out / "transcripts" / f"{safe_name(conv)}.html").write_text(page, encoding="utf-8")
    meta = {
        "created": exported_at,
        "actor": actor,
        "filters": flt.as_dict(),
        "formats": list(formats),
        "include_restricted": include_restricted,
        "counts": {"events": len(sel.events), "messages": len(sel.messages),
                   "conversations": len(sel.conversations()), "withheld_restricted": sel.withheld},
        "journal": {"hmac": hmac},
        "checkpoint": checkpoint_record(sel.checkpoint),
        "head": {"seq": sel.head[0], "hash": sel.head[1]},
    }
    manifest = write_manifest(out, key, meta)
    return ExportResult(out, manifest)

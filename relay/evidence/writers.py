"""The writing passes of an export, after `Plan` has settled what it holds.

`write_events` walks the covered events in seq order once more and writes `events.jsonl`, the
blobs and the transcripts' attachment files as it goes; `write_messages` writes the EML files and
HTML transcripts conversation by conversation, a chunk of messages at a time. A transcript is one
page per conversation (edits refer back to earlier messages, rows are sorted by time), so it is
the one output that holds a whole conversation's messages at once.
"""

from __future__ import annotations

import json
import re
from typing import Callable

from relay.evidence.collect import MESSAGE_REF_KINDS, Ev, MessageRecord, Reader
from relay.evidence.eml import render_eml
from relay.evidence.index import IndexWriter
from relay.evidence.outputs import Outputs
from relay.evidence.plan import Plan, attachment_shas
from relay.evidence.scan import Scope, scan
from relay.evidence.transcript import render_transcript
from relay.private_files import private_dir

_SAFE = re.compile(r"[^A-Za-z0-9._-]")


def safe_name(text: str, limit: int = 80) -> str:
    return (_SAFE.sub("_", text).strip("._") or "file")[:limit]


def blob_path(sha: str) -> str:
    """Where a blob goes in an export: `blobs/<first two hex digits>/<sha256>`, as in the journal."""
    name = safe_name(sha)
    return f"blobs/{name[:2]}/{name}"


def _taken(ev: Ev, plan: Plan, chosen: dict[str, int]) -> bool:
    """Whether an export that is not the whole chain holds this event."""
    flt = plan.flt
    if ev.kind == "message.received":
        return str(ev.body.get("id")) in chosen
    if ev.kind in MESSAGE_REF_KINDS:
        return str(ev.body.get("message_id")) in chosen
    if ev.kind == "conversation.assigned":
        cid = ev.body.get("conversation") or ev.conversation
        if plan.withholds_assignment(ev) or not isinstance(cid, str) or not plan.conversation_chosen(cid):
            return False
        in_time = (flt.since is None or ev.ts >= flt.since) and (flt.until is None or ev.ts < flt.until)
        return flt.rule is None and in_time
    if ev.kind == "retention.erased":
        return plan.any_picked(ev.body.get("seqs", []))
    return False


async def write_events(reader: Reader, plan: Plan, scope: Scope, outputs: Outputs, formats: tuple[str, ...],
                       progress: Callable[[int], None] | None = None) -> tuple[int, int]:
    """`events.jsonl` and `blobs/` (jsonl), `attachments/` (html); returns (events written,
    highest non-checkpoint seq among them)."""
    whole = not plan.flt.as_dict() and not plan.withheld and not plan.withheld_assignments
    jsonl = outputs.open("events.jsonl") if "jsonl" in formats else None
    count = top = seen = 0
    try:
        async for batch in scan(reader, scope):
            ids = [str(ev.body.get("id")) for ev in batch if ev.kind == "message.received"]
            ids += [str(ev.body.get("message_id")) for ev in batch if ev.kind in MESSAGE_REF_KINDS]
            chosen = plan.chosen_ids(ids)
            plan.db.execute("BEGIN")
            for ev in batch:
                if not (whole or _taken(ev, plan, chosen)):
                    continue
                if not whole:
                    plan.pick(ev.seq)
                count += 1
                if ev.kind != "checkpoint":
                    top = max(top, ev.seq)
                if jsonl is not None:
                    jsonl.write((json.dumps(ev.as_json(), sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8"))
            plan.db.execute("COMMIT")
            for ev in batch:
                if ev.kind == "message.received" and chosen.get(str(ev.body.get("id"))) == ev.seq:
                    await _message_files(reader, plan, outputs, formats, ev)
            seen += len(batch)
            if progress is not None:
                progress(seen)
    finally:
        if jsonl is not None:
            jsonl.close()
    return count, top


async def _message_files(reader: Reader, plan: Plan, outputs: Outputs, formats: tuple[str, ...], ev: Ev) -> None:
    """An exported message's blobs (raw payload, attachments) and, the first time a digest is
    seen in seq order, its attachment file for the transcripts (named as that message named it)."""
    m = MessageRecord(str(ev.body.get("id")), ev.seq, ev.ts, ev.conversation or "", ev.body)
    erased = plan.erased(ev.seq) is not None
    if "jsonl" in formats and not erased:
        for sha in [*attachment_shas(m), str(m.body.get("raw_sha256") or ""), str(m.body.get("decrypted_sha256") or "")]:
            if sha and not outputs.has(blob_path(sha)):
                data = await reader.get_blob(sha)
                if data is not None:
                    outputs.write(blob_path(sha), data)
    if "html" not in formats:
        return
    for a in m.attachments:
        sha = str(a.get("sha256") or "")
        if not sha or plan.href(sha) is not None or not plan.exported_blob(sha):
            continue
        data = await reader.get_blob(sha)
        if data is None:
            continue
        rel = f"attachments/{safe_name(sha)}/{safe_name(str(a.get('name') or 'attachment'))}"
        outputs.write(rel, data)
        plan.link(sha, "../" + rel)


async def _blobs_for(reader: Reader, plan: Plan, m: MessageRecord) -> dict[str, bytes | None]:
    """The bytes of `m`'s attachments that the export holds (see `Plan.exported_blob`)."""
    out: dict[str, bytes | None] = {}
    for sha in attachment_shas(m):
        if sha not in out and plan.exported_blob(sha):
            out[sha] = await reader.get_blob(sha)
    return out


async def write_messages(reader: Reader, plan: Plan, outputs: Outputs, formats: tuple[str, ...], exported_at: str,
                         progress: Callable[[int], None] | None = None, chunk: int = 50,
                         index: IndexWriter | None = None) -> None:
    """One EML file per exported message and one HTML transcript per conversation (and, with
    `index`, a row per message naming its file)."""
    eml, html = "eml" in formats, "html" in formats
    if html:
        private_dir(outputs.root / "transcripts")
    if not (eml or html or index):
        return
    done = 0
    for conv in plan.conversations:
        whole: list[MessageRecord] = []
        after = 0
        while seqs := plan.message_seqs(conv, after, chunk):
            records = await plan.records(reader, seqs)
            for m in records:
                eml_path = f"eml/{safe_name(m.conversation)}/{m.seq:08d}-{safe_name(m.id)}.eml"
                if eml:
                    outputs.write(eml_path, render_eml(m, await _blobs_for(reader, plan, m)))
                if index is not None:
                    index.add(m, eml_path if eml else f"transcripts/{safe_name(conv)}.html" if html else "events.jsonl")
            if html:
                whole.extend(records)
            after = seqs[-1]
            done += len(seqs)
            if progress is not None:
                progress(done)
        if html:
            links = {sha: href for m in whole for sha in attachment_shas(m) if (href := plan.href(sha)) is not None}
            page = render_transcript(conv, whole, plan.assignments(conv), links, exported_at)
            outputs.write(f"transcripts/{safe_name(conv)}.html", page.encode("utf-8"))


async def covering_checkpoint(reader: Reader, upto: int, top: int) -> Ev | None:
    """The first checkpoint that covers seq `top`, else the newest one (None: no checkpoint yet)."""
    last: Ev | None = None
    async for batch in scan(reader, Scope(upto), kind="checkpoint"):
        for ev in batch:
            if int(ev.body.get("upto_seq", 0)) >= top:
                return ev
            last = ev
    return last

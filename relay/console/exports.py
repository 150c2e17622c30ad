"""The Export page: start an evidence export with the CLI's filters and formats, follow its
progress live, download it as one zip archive, and see its `verify-export` result.

The export is journaled before it starts (`evidence.prepare`: a fresh signed checkpoint and an
`admin.action` naming the reviewer and filters, as `relay journal export` does); it is written
by `relay.evidence.write_export` from the running journal into `<data_dir>/console-exports/`
(0700), then verified with the journal's public key and zipped."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import secrets
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from relay.console.auth import Ctx, guarded, see_other
from relay.console.layout import e
from relay.evidence import FORMATS, ExportError, ExportFilter, FilterError, parse_time, verify_export, write_export
from relay.evidence.collect import iso
from relay.evidence.keys import load_private_key

log = logging.getLogger("relay.console")
MAX_JOBS = 50
JOB_ID = re.compile(r"\d{8}T\d{6}-[0-9a-f]{6}")
MAX_RECORD = 256 * 1024  # a job's record on disk (state, summary, verify result, progress lines)


@dataclass
class Job:
    id: str
    actor: str
    directory: Path
    filters: dict[str, Any]
    formats: tuple[str, ...]
    include_restricted: bool
    started: float = field(default_factory=time.time)
    lines: list[str] = field(default_factory=list)
    state: str = "running"
    error: str = ""
    summary: dict[str, Any] = field(default_factory=dict)
    verify: dict[str, Any] = field(default_factory=dict)
    archive: Path | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    task: "asyncio.Task[None] | None" = None

    def say(self, line: str) -> None:
        self.lines.append(line.replace("\n", " ")[:500])
        self.changed.set()

    def record(self) -> dict[str, Any]:
        return {"id": self.id, "actor": self.actor, "filters": self.filters, "formats": list(self.formats),
                "include_restricted": self.include_restricted, "started": self.started, "state": self.state,
                "error": self.error, "summary": self.summary, "verify": self.verify, "lines": self.lines[-200:]}


def _save(job: Job) -> None:
    """`<id>.json` beside the export (0600, written whole then renamed), so the Export page lists
    it after a restart."""
    path = job.directory.with_suffix(".json")
    tmp = path.with_suffix(".json.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(job.record(), fh, ensure_ascii=False)
    os.replace(tmp, path)


def _private(directory: Path) -> None:
    """The export holds the record: directories 0700, files 0600."""
    os.chmod(directory, 0o700)
    for path in directory.rglob("*"):
        if not path.is_symlink():
            os.chmod(path, 0o700 if path.is_dir() else 0o600)


def _load(root: Path, path: Path) -> Job | None:
    """A finished job from its record, or None (and a warning naming the file) if it is not one."""
    try:
        if path.stat().st_size > MAX_RECORD:
            raise ValueError(f"larger than {MAX_RECORD} bytes")
        r = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(r, dict) or r.get("id") != path.stem or r.get("state") not in ("done", "failed"):
            raise ValueError("not a finished export's record")
        job = Job(path.stem, str(r["actor"]), root / path.stem, dict(r.get("filters") or {}),
                  tuple(f for f in r.get("formats") or () if f in FORMATS), bool(r.get("include_restricted")),
                  started=float(r["started"]), lines=[str(x)[:500] for x in r.get("lines") or ()][-200:],
                  state=r["state"], error=str(r.get("error") or ""), summary=dict(r.get("summary") or {}),
                  verify=dict(r.get("verify") or {}))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("console export record %s skipped: %s", path, exc)
        return None
    archive = job.directory.with_suffix(".zip")
    job.archive = archive if archive.is_file() else None
    return job


def _read_finished(root: Path) -> list[Job]:
    paths = sorted((p for p in root.glob("*.json") if JOB_ID.fullmatch(p.stem)), reverse=True)[:MAX_JOBS]
    return [job for path in paths if (job := _load(root, path)) is not None]


async def load_finished(console: Any) -> None:
    """Once per run: the newest finished exports of earlier runs, from their records on disk."""
    if console.exports_read:
        return
    console.exports_read = True
    for job in await asyncio.to_thread(_read_finished, _root(console)):
        if job.id not in console.exports:
            console.exports[job.id] = job


def _root(console: Any) -> Path:
    root = Path(console.relay.config.data_dir) / "console-exports"
    root.mkdir(mode=0o700, exist_ok=True)
    os.chmod(root, 0o700)
    return root


def _zip(directory: Path, archive: Path) -> None:
    fd = os.open(archive, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh, zipfile.ZipFile(fh, "w", zipfile.ZIP_DEFLATED) as z:
        for path in sorted(directory.rglob("*")):
            if path.is_file():
                z.write(path, f"{directory.name}/{path.relative_to(directory).as_posix()}")


async def _run(console: Any, job: Job, flt: ExportFilter) -> None:
    relay = console.relay
    try:
        key = load_private_key(Path(relay.config.data_dir) / "keys" / "journal_ed25519")
        _, restricted = await console.state()
        result = await write_export(relay.journal, job.directory, flt, key, formats=job.formats,
                                    restricted_clients=restricted, include_restricted=job.include_restricted,
                                    actor=job.actor, hmac=relay.config.hmac_key is not None,
                                    progress=job.say, progress_every=1000)
        job.summary = result.summary()
        await asyncio.to_thread(_private, job.directory)
        job.say(f"written: {job.summary['counts']['messages']} messages, {job.summary['files']} files")
        report = await asyncio.to_thread(verify_export, job.directory, key.public_key())
        job.verify = report.to_dict()
        job.say("verify-export: " + ("ok" if report.ok else "FAILED: " + "; ".join(report.problems)))
        archive = job.directory.with_suffix(".zip")
        await asyncio.to_thread(_zip, job.directory, archive)
        job.archive = archive
        job.state = "done" if report.ok else "failed"
    except asyncio.CancelledError:
        job.state, job.error = "failed", "stopped with the relay"
        raise
    except Exception as exc:  # an export that fails is shown, never silent
        log.exception("console export %s failed", job.id)
        job.state, job.error = "failed", str(exc)
        job.say(f"failed: {exc}")
    finally:
        try:
            await asyncio.to_thread(_save, job)
        except OSError as exc:
            log.error("console export %s: its record could not be written (%s); it is listed until a restart", job.id, exc)
        job.changed.set()


def _form(ctx: Ctx, p: dict[str, str] | None = None) -> str:
    p = p or {}
    checks = "".join(f"<label><input type='checkbox' name='format' value='{f}' id='x-format-{f}' checked> {f}</label> "
                     for f in FORMATS)
    restricted = ("<label><input type='checkbox' name='include_restricted' value='1' id='x-restricted'>"
                  " include restricted content (admin; journaled)</label>" if ctx.reviewer.role == "admin" else "")
    fields = (("conversation", "Conversation", ""), ("client", "Client", "CHANNEL:USER"), ("employee", "Employee", ""),
              ("since", "Since", "YYYY-MM-DD"), ("until", "Until", "YYYY-MM-DD"), ("rule", "Rule", ""))
    inputs = "".join(f"<label>{label} <input name='{n}' id='x-{n}' value='{e(p.get(n))}' placeholder='{ph}' size='12'></label>"
                     for n, label, ph in fields)
    return (f"<form method='post' action='/console/exports/start' class='filters' id='export-form'>{ctx.csrf_field}"
            f"{inputs}<fieldset><legend>Formats</legend>{checks}</fieldset>{restricted}"
            "<button type='submit' id='export-start'>Start export</button></form>")


def _job_row(job: Job) -> str:
    link = (f"<a href='/console/exports/{e(job.id)}/download' id='download-{e(job.id)}'>download zip</a>"
            if job.archive is not None else "")
    return (f"<tr><td><a href='/console/exports/{e(job.id)}'>{e(job.id)}</a></td><td>{e(iso(job.started))}</td>"
            f"<td>{e(job.actor)}</td><td>{e(job.state)}</td><td>{link}</td></tr>")


@guarded()
async def exports_page(request: web.Request, ctx: Ctx) -> web.StreamResponse:
    await load_finished(ctx.console)
    jobs = sorted(ctx.console.exports.values(), key=lambda j: -j.started)
    table = ("<table id='jobs'><thead><tr><th>Export</th><th>Started</th><th>By</th><th>State</th><th></th></tr></thead>"
             f"<tbody>{''.join(_job_row(j) for j in jobs)}</tbody></table>" if jobs else "<p>No exports started here yet.</p>")
    return ctx.page("Evidence export", _form(ctx) + "<h2>Exports</h2>" + table, current="/console/exports")


@guarded(write=True)
async def start(request: web.Request, ctx: Ctx) -> web.StreamResponse:
    p = {k: ctx.get(k).strip()[:500] for k in ("conversation", "client", "employee", "since", "until", "rule")}
    include = ctx.get("include_restricted") == "1"
    if include and ctx.reviewer.role != "admin":
        return ctx.refuse(f"{ctx.reviewer.id} has role {ctx.reviewer.role}; only an admin may export restricted content", 403)
    formats = tuple(f for f in FORMATS if f in ctx.getall("format"))
    try:
        if not formats:
            raise ExportError("choose at least one format (jsonl, eml, html)")
        flt = ExportFilter(conversation=p["conversation"] or None, client=p["client"] or None,
                           employee=p["employee"] or None, since=parse_time(p["since"] or None),
                           until=parse_time(p["until"] or None, end=True), rule=p["rule"] or None)
    except (FilterError, ExportError) as exc:
        return ctx.page("Evidence export", _form(ctx, p), error=str(exc), status=400, current="/console/exports")
    running = [j for j in ctx.console.exports.values() if j.state == "running"]
    if len(running) >= 2:
        return ctx.page("Evidence export", _form(ctx, p), error="two exports are already running; wait for one to finish",
                        status=429, current="/console/exports")
    job_id = time.strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)
    directory = _root(ctx.console) / job_id
    job = Job(job_id, ctx.reviewer.id, directory, flt.as_dict(), formats, include)
    await ctx.console.act("evidence.prepare", {"actor": ctx.reviewer.id, "args": {
        **flt.as_dict(), "formats": list(formats), "out": str(directory), "include_restricted": include,
        "via": "console"}})
    while len(ctx.console.exports) >= MAX_JOBS:
        oldest = min(ctx.console.exports.values(), key=lambda j: j.started)
        if oldest.state == "running":
            break
        ctx.console.exports.pop(oldest.id)
    ctx.console.exports[job_id] = job
    job.say("started")
    job.task = asyncio.get_running_loop().create_task(_run(ctx.console, job, flt), name=f"console-export-{job_id}")
    return see_other(f"/console/exports/{job_id}")


async def _job(ctx: Ctx, request: web.Request) -> Job | None:
    await load_finished(ctx.console)
    job = ctx.console.exports.get(request.match_info["job"])
    if job is None or (job.actor != ctx.reviewer.id and ctx.reviewer.role != "admin"):
        return None
    return job


@guarded()
async def job_page(request: web.Request, ctx: Ctx) -> web.StreamResponse:
    job = await _job(ctx, request)
    if job is None:
        return ctx.refuse("no such export of yours (exports are listed on the Export page)", 404)
    verify = ""
    if job.verify:
        v = job.verify
        verify = (f"<h2>verify-export</h2><p id='verify-result' class='{'notice' if v['ok'] else 'error'}'>"
                  + ("ok: " if v["ok"] else "FAILED: ") + f"{int(v['events'])} events, {int(v['files'])} files, signature "
                  + ("valid" if v["ok"] else "checked") + (f", checkpoint seq {v['checkpoint_seq']}" if v.get("checkpoint_seq") else "")
                  + "</p>" + "".join(f"<p class='error'>{e(x)}</p>" for x in v.get("problems", []))
                  + "".join(f"<p class='note'>note: {e(x)}</p>" for x in v.get("notes", [])))
    counts = job.summary.get("counts", {})
    summary = (f"<p id='export-summary'>{int(counts.get('messages', 0))} messages in {int(counts.get('conversations', 0))}"
               f" conversations ({int(counts.get('events', 0))} events); withheld under erasure requests:"
               f" {int(counts.get('withheld_restricted', 0))}.</p>" if counts else "")
    link = (f"<p><a href='/console/exports/{e(job.id)}/download' id='download'>Download {e(job.id)}.zip</a></p>"
            if job.archive is not None else "")
    body = (f"<p>State: <strong id='export-state'>{e(job.state)}</strong>; filters {e(job.filters or 'none')};"
            f" formats {e(', '.join(job.formats))}; started by {e(job.actor)} at {e(iso(job.started))}.</p>"
            + (f"<p class='error'>{e(job.error)}</p>" if job.error else "")
            + f"<pre class='progress' id='export-progress' data-job='{e(job.id)}' data-done='{'1' if job.state != 'running' else '0'}'"
              f" aria-live='polite'>{e(chr(10).join(job.lines))}\n</pre>" + summary + verify + link)
    return ctx.page(f"Export {job.id}", body, current="/console/exports")


@guarded()
async def job_events(request: web.Request, ctx: Ctx) -> web.StreamResponse:
    job = await _job(ctx, request)
    if job is None:
        return web.json_response({"error": "no such export"}, status=404)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"})
    await response.prepare(request)
    sent = len(job.lines)
    try:
        while True:
            job.changed.clear()
            for line in job.lines[sent:]:
                await response.write(f"event: progress\ndata: {line}\n\n".encode("utf-8"))
            sent = len(job.lines)
            if ctx.console.closing:
                break
            if job.state != "running":
                await response.write(f"event: done\ndata: {job.state}\n\n".encode())
                break
            try:
                await asyncio.wait_for(job.changed.wait(), 15)
            except asyncio.TimeoutError:
                await response.write(b": keepalive\n\n")
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    return response


@guarded()
async def download(request: web.Request, ctx: Ctx) -> web.StreamResponse:
    job = await _job(ctx, request)
    if job is None or job.archive is None or not job.archive.exists():
        return ctx.refuse("this export has no archive (yet)", 404)
    return web.FileResponse(job.archive, headers={"Content-Disposition": f'attachment; filename="relay-export-{job.id}.zip"',
                                                  "Content-Type": "application/zip", "Cache-Control": "no-store"})


def add_routes(r: web.UrlDispatcher) -> None:
    r.add_get("/console/exports", exports_page)
    r.add_post("/console/exports/start", start)
    r.add_get("/console/exports/{job}", job_page)
    r.add_get("/console/exports/{job}/events", job_events)
    r.add_get("/console/exports/{job}/download", download)

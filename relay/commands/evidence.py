"""Evidence verbs wired into `relay journal`: export with filters and formats, verify-export,
and search with filters. Not in the verb table: `relay/commands/journal.py` adds these verbs."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from relay.cli import CommandError
from relay.commands.common import journal_settings_of
from relay.commands.compliance_common import emit_json, reporting
from relay.evidence import (ExportFilter, SearchQuery, parse_formats, parse_time, search, verify_export,
                            write_export)
from relay.evidence.keys import load_private_key, load_public_key
from relay.evidence.packing import ZipError, pack_zip, unpack_zip
from relay.evidence.verify import INTEGRITY_ONLY
from relay.compliance.holds import load_state


def add_export_filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--conversation", metavar="ID")
    p.add_argument("--client", metavar="CHANNEL:USER", help="a client (CHANNEL:USER, or USER on any channel)")
    p.add_argument("--employee", metavar="ID")
    p.add_argument("--since", metavar="DATE", help="from this date/time (UTC ISO 8601)")
    p.add_argument("--until", metavar="DATE", help="before this date/time (a bare date includes that day)")
    p.add_argument("--rule", metavar="RULE", help="only messages matched by this rule")
    p.add_argument("--format", action="append", metavar="FMT", help="jsonl, eml, html or all (default all; repeatable)")
    p.add_argument("--include-restricted", action="store_true",
                   help="include content under a data-subject erasure request (admin only, with --as)")
    p.add_argument("--as", dest="actor", default="", help="who exports (recorded in the signed manifest)")


def add_search_filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--channel")
    p.add_argument("--employee")
    p.add_argument("--client", metavar="CHANNEL:USER")
    p.add_argument("--conversation", metavar="ID")
    p.add_argument("--direction", choices=("inbound", "outbound"))
    p.add_argument("--action", choices=("allow", "flag", "redact", "quarantine", "block"))
    p.add_argument("--rule")
    p.add_argument("--since", metavar="DATE")
    p.add_argument("--until", metavar="DATE")
    p.add_argument("--include-restricted", action="store_true", help="admin only, with --as")
    p.add_argument("--as", dest="actor", default="")


def admin_check(args: argparse.Namespace) -> None:
    """`--include-restricted` only for an admin named with `--as` (reviewers: in the config)."""
    if not getattr(args, "include_restricted", False):
        return
    from relay.config import ConfigError, load_config
    from relay.compliance.review import ReviewError, compliance_settings
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        raise CommandError("\n".join(exc.problems)) from None
    try:
        compliance_settings(cfg.raw).require_admin(args.actor)
    except ReviewError as exc:
        raise CommandError(f"--include-restricted: {exc}") from None


async def _open(settings: Any) -> Any:
    from relay.journal import Journal
    if getattr(settings, "url", None):
        from relay.journal.backend import open_journal

        return await open_journal(settings.data_dir, url=settings.url, read_only=True, **settings.open_kwargs())
    if not (settings.data_dir / "journal.sqlite3").exists():
        raise CommandError(f"no journal at {settings.data_dir / 'journal.sqlite3'} (check data_dir or pass --data-dir)")
    return await Journal.open(settings.data_dir, read_only=True, **settings.open_kwargs())


def _prepare(args: argparse.Namespace, settings: Any, what: dict[str, Any]) -> str | None:
    """Ask the relay (running, or opened offline) to sign its head and journal the export;
    returns a note when that was not possible (the export itself still proceeds)."""
    from relay.admin import AdminError, run_action
    from relay.commands.compliance_common import default_actor
    from relay.config import ConfigError, load_config
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        return f"export not journaled and no fresh checkpoint ({exc.problems[0]})"
    if Path(cfg.data_dir).resolve() != Path(settings.data_dir).resolve():
        return "export not journaled: --data-dir is not the config's data_dir"
    try:
        run_action(cfg, "evidence.prepare", {"actor": args.actor or default_actor(), "args": what})
    except (AdminError, ConfigError, OSError) as exc:
        return f"export not journaled and no fresh checkpoint ({exc})"
    return None


def _progress(line: str) -> None:
    print(f"relay: export: {line}", file=sys.stderr, flush=True)


def cmd_export(args: argparse.Namespace) -> int:
    return reporting(lambda a: _export(a, journal_settings_of(a)))(args)


def _export(args: argparse.Namespace, settings: Any) -> int:
    if not (settings.data_dir / "journal.sqlite3").exists():
        raise CommandError(f"no journal at {settings.data_dir / 'journal.sqlite3'} (check data_dir or pass --data-dir)")
    admin_check(args)
    flt = ExportFilter(conversation=args.conversation, client=args.client, employee=args.employee,
                       since=parse_time(args.since), until=parse_time(args.until, end=True), rule=args.rule)
    formats = parse_formats(args.format)
    key = load_private_key(settings.data_dir / "keys" / "journal_ed25519")
    note = _prepare(args, settings, {**flt.as_dict(), "formats": list(formats), "out": str(args.out),
                                     "include_restricted": args.include_restricted})

    async def go() -> dict[str, Any]:
        journal = await _open(settings)
        try:
            _, restricted = await load_state(journal)
            result = await write_export(journal, Path(args.out), flt, key, formats=formats, restricted_clients=restricted,
                                        include_restricted=args.include_restricted, actor=args.actor,
                                        hmac=settings.hmac_key is not None,
                                        progress=_progress if args.progress > 0 else None,
                                        progress_every=max(1, args.progress), index=getattr(args, "index", False))
        finally:
            await journal.close()
        return result.summary()

    summary = asyncio.run(go())
    if getattr(args, "zip", False):
        try:
            summary["zip"] = str(pack_zip(Path(args.out)))
        except ZipError as exc:
            raise CommandError(str(exc)) from None
    if note:
        print(f"relay: note: {note}", file=sys.stderr)
    if args.json:
        emit_json(summary)
        return 0
    c = summary["counts"]
    print(f"exported {c['messages']} messages in {c['conversations']} conversations ({c['events']} events) to"
          f" {summary['directory']} as {', '.join(summary['formats'])}; {summary['files']} files in the signed manifest")
    if c["withheld_restricted"]:
        print(f"  withheld {c['withheld_restricted']} messages under erasure requests (admins: --include-restricted)")
    if summary.get("zip"):
        print(f"  packed as {summary['zip']}")
    if summary["checkpoint_seq"] is None:
        print("  note: no checkpoint covers the newest events yet; the manifest signature still covers every file")
    return 0


NOT_AUTHENTICATED_EXIT = 3
"""verify-export's exit status when nothing is wrong but no trusted key was given (0 = verified, 1 = failed)."""


def cmd_verify_export(args: argparse.Namespace) -> int:
    def go(a: argparse.Namespace) -> int:
        key = load_public_key(a.public_key) if a.public_key else None
        directory = Path(a.directory)
        if directory.suffix == ".zip" and directory.is_file():
            with tempfile.TemporaryDirectory(prefix="relay-verify-") as tmp:
                try:
                    root = unpack_zip(directory, Path(tmp))
                except ZipError as exc:
                    raise CommandError(str(exc)) from None
                report = verify_export(root, key)
        else:
            report = verify_export(directory, key)
        if a.json:
            emit_json(report.to_dict())
        else:
            if report.ok:
                print(f"ok: {report.events} events, {report.files} files, signature valid"
                      + (f", checkpoint seq {report.checkpoint_seq}" if report.checkpoint_seq else ""))
            elif report.status == INTEGRITY_ONLY:
                print(f"NOT AUTHENTICATED (integrity only): {report.events} events and {report.files} files match "
                      "a manifest signed by a key nobody vouched for; this does not show the export is genuine")
            for p in report.problems:
                print(f"FAIL {p}")
            for n in report.notes:
                print(f"note: {n}")
        return 0 if report.ok else 1 if report.problems else NOT_AUTHENTICATED_EXIT
    return reporting(go)(args)


def cmd_search(args: argparse.Namespace, settings: Any) -> int:
    def go(a: argparse.Namespace) -> int:
        admin_check(a)
        q = SearchQuery(text=a.query, channel=a.channel, employee=a.employee, client=a.client, direction=a.direction,
                        action=a.action, rule=a.rule, conversation=a.conversation, since=parse_time(a.since),
                        until=parse_time(a.until, end=True), limit=a.limit)
        if not q.text.strip() and not any((q.channel, q.employee, q.client, q.direction, q.action, q.rule,
                                           q.conversation, q.since, q.until)):
            raise CommandError("search: give some text to look for, or a filter")

        async def run() -> list[dict[str, Any]]:
            journal = await _open(settings)
            try:
                _, restricted = await load_state(journal)
                return await search(journal, q, restricted, a.include_restricted)
            finally:
                await journal.close()

        rows = asyncio.run(run())
        for r in rows:
            if a.json:
                print(json.dumps(r, ensure_ascii=False, sort_keys=True))
            else:
                print(f"{r['id']}  {r['conversation'] or '-'}  {r['channel'] or '-'}  {r['sender_user'] or '-'}"
                      f"  {r['snip']}  ({r['time']}, {r['direction']}, {r['action'] or 'no verdict'})")
        if not rows:
            filtered = any((q.channel, q.employee, q.client, q.direction, q.action, q.rule, q.conversation,
                            q.since, q.until))
            what = f' "{q.text.strip()}"' if q.text.strip() else ""
            print(f"relay: no messages match{what}{' with these filters' if filtered else ''}", file=sys.stderr)
        return 0
    return reporting(go)(args)

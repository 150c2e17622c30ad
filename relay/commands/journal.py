"""`relay journal verify|show|search|export|rebuild`: inspect and check the journal from a shell."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import sqlite3
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from relay.cli import CommandError
from relay.journal import Journal, JournalError
from relay.journal import settings as journal_settings
from relay.journal import replica, signing
from relay.journal.backend import open_journal
from relay.journal.chain import canonical_json
from relay.journal.witness import Witness, WitnessError, ad_hoc
from relay.commands.common import journal_settings_of
from relay.commands import evidence as evidence_commands
from relay.compliance.restricted import RESTRICTED_NOTE, RestrictedEvents, withheld_body
from relay.compliance.holds import load_state


SHOW_NEWEST = 100
"""Events `journal show` prints when not told how many: the newest, as `tail` would."""


def setup(parser: argparse.ArgumentParser) -> None:
    verbs = parser.add_subparsers(dest="journal_command", metavar="VERB")
    verbs.required = True

    def verb(name: str, help_: str, handler: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
        p = verbs.add_parser(name, help=help_)
        p.add_argument("--config", type=Path, default=Path("config.example.yaml"), help="config file (data_dir, journal:)")
        p.add_argument("--data-dir", type=Path, default=None, help="journal directory; overrides the config's data_dir")
        p.set_defaults(handler=_reporting(handler))
        return p

    p = verb("verify", "recompute the hash chain, blob digests and checkpoints (incremental from the last"
             " verified checkpoint; --full for the whole chain)", cmd_verify)
    p.add_argument("--json", action="store_true", help="machine-readable report")
    p.add_argument("--full", action="store_true", help="the whole chain from seq 1, not only what is new since the last verify")
    p.add_argument("--witness", nargs="*", default=None, metavar="NAME|DIR|URL",
                   help="also check against witnesses: the configured ones (journal.witnesses) when none is named;"
                        " a name, a directory, an http(s) URL or syslog-file:PATH")
    p.add_argument("--export", type=Path, default=None, metavar="DIR", help="verify an export directory instead")
    p.add_argument("--replica", default=None, metavar="DIR",
                   help="verify the WORM copy (DIR or s3://bucket/prefix: its chain, blobs, checkpoints) and that it agrees with the journal")

    p = verb("replicate", "copy new events, blobs and checkpoints to the WORM copy (what relay run does on a schedule)",
             cmd_replicate)
    p.add_argument("--to", default=None, metavar="DIR", help="the copy (default: journal.replica.path)")
    p.add_argument("--json", action="store_true")

    p = verb("restore", "rebuild a journal from a WORM copy into a new data directory (--data-dir)", cmd_restore)
    p.add_argument("--from", dest="source", required=True, metavar="DIR", help="the copy")
    p.add_argument("--json", action="store_true")

    p = verb("show", "print events, one per line", cmd_show)
    p.add_argument("--conversation", help="only this conversation id")
    p.add_argument("--kind", help="only this event kind, e.g. message.received")
    p.add_argument("--since-seq", type=int, default=None, metavar="N", help="only events with seq >= N")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help=f"the newest N events (default {SHOW_NEWEST}), or the first N with --oldest")
    p.add_argument("--oldest", action="store_true", help="from the first event on (default: the newest)")
    p.add_argument("--json", action="store_true", help="JSON lines (the full events)")
    p.add_argument("--include-restricted", action="store_true",
                   help="show content under a data-subject erasure request (admin only, with --as)")
    p.add_argument("--as", dest="actor", default="", help="who asks (an admin under reviewers:)")

    p = verb("search", "full-text search over message text (trigram: any 3+ character substring)", cmd_search)
    p.add_argument("query", nargs="?", default="", help="text to find (substring; CJK works; case-insensitive for Latin letters)")
    p.add_argument("--limit", type=int, default=20, metavar="N")
    p.add_argument("--json", action="store_true")
    evidence_commands.add_search_filters(p)

    p = verb("export", "evidence export: events (JSON lines), EML per message, HTML per conversation, signed manifest",
             evidence_commands.cmd_export)
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="new or empty directory")
    p.add_argument("--json", action="store_true")
    p.add_argument("--progress", type=int, default=10000, metavar="N",
                   help="a progress line on stderr every N events and every N messages (default 10000; 0: none)")
    p.add_argument("--index", action="store_true",
                   help="also index.csv and index.json: one row per exported message (seq, time, conversation,"
                        " parties, channel, verdict, file)")
    p.add_argument("--zip", action="store_true", help="also pack the export as DIR.zip (verify with verify --export DIR.zip)")
    evidence_commands.add_export_filters(p)

    p = verb("verify-export", "check an export offline: signature, every file's digest, events, checkpoint",
             evidence_commands.cmd_verify_export)
    p.add_argument("directory", type=Path, metavar="DIR")
    p.add_argument("--public-key", default=None, metavar="FILE|HEX",
                   help="the journal's public key (keys/journal_ed25519.pub); without it the manifest's own key is used")
    p.add_argument("--json", action="store_true")

    verb("rebuild", "drop and rebuild the projections from the events (stop relay first)", cmd_rebuild)

    p = verb("migrate", "copy a SQLite journal into PostgreSQL, chain intact (stop relay first; resumable)", cmd_migrate)
    p.add_argument("--from", dest="source", required=True, metavar="sqlite:PATH", help="the data_dir (or its journal.sqlite3)")
    p.add_argument("--to", dest="target", required=True, metavar="postgresql://…", help="the target database (${ENV} allowed)")
    p.add_argument("--chunk", type=int, default=2000, metavar="N", help="events per transaction")
    p.add_argument("--progress", type=int, default=10000, metavar="N", help="a progress line on stderr every N events (0: none)")


def _reporting(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Prints a CommandError as cli.main would: under `python -m relay.cli` the class cli.main
    catches is `__main__.CommandError`, not the `relay.cli.CommandError` raised here."""

    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except BrokenPipeError:  # e.g. `relay journal show | head`
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
        except CommandError as exc:
            for line in str(exc).splitlines() or [""]:
                print(f"relay: {line}", file=sys.stderr)
            return exc.code

    return run


def _settings(args: argparse.Namespace) -> journal_settings.JournalSettings:
    return journal_settings_of(args)


def _run(coro_fn: Callable[[], Awaitable[int]]) -> int:
    try:
        return asyncio.run(coro_fn())  # type: ignore[arg-type]
    except JournalError as exc:
        raise CommandError(str(exc)) from None
    except sqlite3.Error as exc:
        raise CommandError(f"cannot read the journal database: {exc}") from None
    except Exception as exc:
        if type(exc).__module__.startswith("asyncpg"):  # without importing it for SQLite users
            raise CommandError(f"journal database (PostgreSQL): {exc}") from None
        raise


async def _open(s: journal_settings.JournalSettings, read_only: bool = True) -> Journal:
    if s.url:
        return await open_journal(s.data_dir, url=s.url, read_only=read_only, **s.open_kwargs())  # type: ignore[return-value]
    if not (s.data_dir / "journal.sqlite3").exists():
        raise JournalError(f"no journal at {s.data_dir / 'journal.sqlite3'} (check data_dir or pass --data-dir)")
    return await Journal.open(s.data_dir, read_only=read_only, **s.open_kwargs())


def cmd_verify(args: argparse.Namespace) -> int:
    s = _settings(args)

    async def go() -> int:
        if args.export is not None:
            return evidence_commands.cmd_verify_export(argparse.Namespace(
                directory=args.export, public_key=str(s.data_dir / "keys" / "journal_ed25519.pub")
                if (s.data_dir / "keys" / "journal_ed25519.pub").exists() else None, json=args.json))
        elif args.replica is not None:
            journal = await _open(s)
            try:
                public = signing.load_public(s.data_dir / "keys")
                report = await replica.verify_copy(replica.target_for(args.replica, s.replica), s.hmac_key, journal.path, public)
            except replica.ReplicaError as exc:
                raise CommandError(str(exc)) from None
            finally:
                await journal.close()
        else:
            witnesses = _witnesses(s, args.witness)
            journal = await _open(s)
            try:
                report = await journal.verify_recorded(full=args.full, witnesses=witnesses)
            except WitnessError as exc:
                raise CommandError(str(exc)) from None
            finally:
                await journal.close()
        print(json.dumps(report.to_dict()) if args.json else report.line())
        return 0 if report.ok else 1

    return _run(go)


def _replica_target(s: journal_settings.JournalSettings, spec: str | None) -> replica.ReplicaTarget:
    if spec is not None:
        return replica.target_for(spec, s.replica)
    if s.replica is None:
        raise CommandError("no copy named: pass --to DIR or set journal.replica.path")
    return s.replica


def cmd_replicate(args: argparse.Namespace) -> int:
    s = _settings(args)
    target = _replica_target(s, args.to)

    async def go() -> int:
        journal = await _open(s)
        try:
            result = await replica.sync(journal, target)
        except replica.ReplicaError as exc:
            raise CommandError(str(exc)) from None
        finally:
            await journal.close()
        print(json.dumps(result.to_dict()) if args.json else
              f"copied {result.copied_events} events and {result.copied_blobs} blobs to {target.name}; copy head seq {result.head}")
        return 0

    return _run(go)


def cmd_restore(args: argparse.Namespace) -> int:
    if args.data_dir is None:
        raise CommandError("restore needs --data-dir NEW_DIR (a new, empty directory for the rebuilt journal)")
    target = replica.target_for(args.source, _settings(args).replica)

    async def go() -> int:
        try:
            count = await replica.restore(target, args.data_dir)
        except replica.ReplicaError as exc:
            raise CommandError(str(exc)) from None
        journal = await Journal.open(args.data_dir, read_only=True, hmac_key=_settings(args).hmac_key)
        try:
            report = await journal.verify_recorded(full=True)
        finally:
            await journal.close()
        if args.json:
            print(json.dumps({"restored": count, "verify": report.to_dict()}))
        else:
            print(f"restored {count} events into {args.data_dir}; verify: {report.line()}")
        return 0 if report.ok else 1

    return _run(go)


def _witnesses(s: journal_settings.JournalSettings, specs: list[str] | None) -> list[Witness]:
    if specs is None:
        return []
    if not specs:
        if not s.witnesses:
            raise CommandError("--witness: no journal.witnesses configured; name a directory or URL")
        return list(s.witnesses)
    named = {w.name: w for w in s.witnesses}
    return [named.get(spec) or ad_hoc(spec, Path.cwd()) for spec in specs]


def _summary(body: dict[str, Any], width: int = 140) -> str:
    text = canonical_json(body)
    return text if len(text) <= width else text[: width - 1] + "…"


def cmd_show(args: argparse.Namespace) -> int:
    """Content under an erasure request is withheld as search and export withhold it; the
    event's seq, kind, conversation, hashes and digests stay, so the chain can be inspected."""
    s = _settings(args)
    evidence_commands.admin_check(args)
    where: list[str] = []
    params: list[Any] = []
    for column, value in (("conversation = ?", args.conversation), ("kind = ?", args.kind), ("seq >= ?", args.since_seq)):
        if value is not None:
            where.append(column)
            params.append(value)

    if args.limit is not None and args.limit < 1:
        raise CommandError("journal show: --limit must be at least 1")

    async def go() -> int:
        journal = await _open(s)
        try:
            _, restricted = await load_state(journal)
            guard = RestrictedEvents(journal, {} if args.include_restricted else restricted)
            limit = args.limit
            if not args.oldest:
                limit = await _newest_window(journal, where, params, args.limit or SHOW_NEWEST, args.limit is None)
            async for ev in journal.iter_events(" AND ".join(where), tuple(params), limit=limit):
                body, mark = ev.body, ""
                if await guard.check(ev.seq, ev.kind, ev.body):
                    body, mark = withheld_body(ev.kind, ev.body), f"[{RESTRICTED_NOTE}] "
                if args.json:
                    line = canonical_json(ev.to_dict() | {"body": body})
                else:
                    when = datetime.datetime.fromtimestamp(ev.ts, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
                    line = f"{ev.seq:>8} {when} {ev.kind:<22} {ev.conversation or '-'} {mark}{_summary(body)}"
                sys.stdout.write(line + "\n")
        finally:
            await journal.close()
        if guard.withheld:
            print(f"relay: note: withheld the content of {guard.withheld} events under erasure requests"
                  " (admins: --include-restricted --as NAME)", file=sys.stderr)
        return 0

    return _run(go)


async def _newest_window(journal: Journal, where: list[str], params: list[Any], count: int, note: bool) -> None:
    """Narrow `where` to the newest `count` matching events (still printed in seq order, so the
    chain reads as it was written); with `note`, say on stderr when older ones were left out."""
    condition = " AND ".join(where)
    rows = await journal.fetchall(
        f"SELECT seq FROM events{' WHERE ' + condition if condition else ''} ORDER BY seq DESC LIMIT 1 OFFSET ?",
        (*params, count - 1))
    if not rows:
        return None
    first = int(rows[0]["seq"])
    if note:
        older = await journal.fetchall(
            f"SELECT 1 FROM events WHERE {condition + ' AND ' if condition else ''}seq < ? LIMIT 1", (*params, first))
        if older:
            print(f"relay: showing the newest {count} events; --limit N for another number, --oldest from the first",
                  file=sys.stderr)
    where.append("seq >= ?")
    params.append(first)
    return None


def cmd_search(args: argparse.Namespace) -> int:
    return evidence_commands.cmd_search(args, _settings(args))


def cmd_migrate(args: argparse.Namespace) -> int:
    """Copies, then verifies the target with the source's checkpoint files; exit 1 if it does not verify."""
    s = _settings(args)
    try:
        target = journal_settings.expand_env(args.target, "--to")
    except journal_settings.SettingsError as exc:
        raise CommandError(str(exc)) from None

    async def go() -> int:
        from relay.journal.migrate import migrate, source_dir
        from relay.journal.pg import PgJournal

        source = source_dir(args.source)
        last = [0]

        def progress(done: int, total: int) -> None:
            if args.progress and (done - last[0] >= args.progress or done == total):
                last[0] = done
                print(f"relay: migrate: {done}/{total} events", file=sys.stderr, flush=True)

        report = await migrate(source, target, hmac_key=s.hmac_key, chunk=max(1, args.chunk), progress=progress)
        print(report.line())
        journal = await PgJournal.open(target, data_dir=source, hmac_key=s.hmac_key, read_only=True)
        try:
            check = await journal.verify()
        finally:
            await journal.close()
        print(f"target verify: {check.line()}")
        return 0 if check.ok else 1

    return _run(go)


def cmd_rebuild(args: argparse.Namespace) -> int:
    s = _settings(args)

    async def go() -> int:
        journal = await _open(s, read_only=False)
        try:
            count = await journal.rebuild()
        finally:
            await journal.close()
        print(f"rebuilt projections from {count} events")
        return 0

    return _run(go)

"""`relay retention run`, `relay hold add|release|list`, `relay erase --client`."""

from __future__ import annotations

import argparse

from relay.commands.compliance_common import (add_config_arg, add_json_arg, config_of, default_actor, emit_json,
                                              read_journal, reporting, write)
from relay.evidence.collect import iso, parse_time
from relay.compliance.holds import load_state


def setup_retention(ret: argparse.ArgumentParser) -> None:
    verbs = ret.add_subparsers(dest="retention_command", metavar="VERB")
    verbs.required = True
    p = verbs.add_parser("run", help="erase what is past retention now (journaled as retention.erased)")
    add_config_arg(p)
    add_json_arg(p)
    p.add_argument("--dry-run", action="store_true", help="only report what would be erased")
    p.add_argument("--as", dest="actor", default=None, help="who runs it (default: your login name)")
    p.add_argument("--now", default=None, metavar="DATE", help=argparse.SUPPRESS)
    p.set_defaults(handler=reporting(cmd_run))


def setup_hold(hold: argparse.ArgumentParser) -> None:
    hverbs = hold.add_subparsers(dest="hold_command", metavar="VERB")
    hverbs.required = True
    p = hverbs.add_parser("add", help="place a legal hold")
    add_config_arg(p)
    add_json_arg(p)
    scope = p.add_mutually_exclusive_group(required=True)
    scope.add_argument("--conversation", metavar="ID")
    scope.add_argument("--client", metavar="CHANNEL:USER")
    scope.add_argument("--employee", metavar="ID")
    p.add_argument("--reason", required=True, help="the matter the hold preserves evidence for")
    p.add_argument("--as", dest="actor", default=None,
                   help="a supervisor or admin under reviewers: (default: your login name)")
    p.set_defaults(handler=reporting(cmd_hold_add))
    p = hverbs.add_parser("release", help="release a legal hold")
    add_config_arg(p)
    add_json_arg(p)
    p.add_argument("hold_id")
    p.add_argument("--reason", required=True)
    p.add_argument("--as", dest="actor", default=None,
                   help="a supervisor or admin under reviewers: (default: your login name)")
    p.set_defaults(handler=reporting(cmd_hold_release))
    p = hverbs.add_parser("list", help="active legal holds")
    add_config_arg(p)
    add_json_arg(p)
    p.set_defaults(handler=reporting(cmd_hold_list))


def setup_erase(p: argparse.ArgumentParser) -> None:
    add_config_arg(p)
    add_json_arg(p)
    p.add_argument("--client", required=True, metavar="CHANNEL:USER")
    p.add_argument("--reason", required=True, help="e.g. the request reference")
    p.add_argument("--as", dest="actor", default=None,
                   help="a supervisor or admin under reviewers: (default: your login name)")
    p.set_defaults(handler=reporting(cmd_erase))


def cmd_run(args: argparse.Namespace) -> int:
    config = config_of(args)
    params: dict = {"actor": args.actor or default_actor() or "retention", "dry_run": args.dry_run}
    if args.now:
        params["at"] = parse_time(args.now)
    result = write(config, "retention.run", params)
    if args.json:
        emit_json(result)
        return 0
    held = result.get("held_by") or {}
    if args.dry_run:
        w = result["would_erase"]
        print(f"would erase {w['messages']} messages ({w['events']} events, {w['blobs']} blobs)")
    else:
        e = result["erased"]
        print(f"erased {e['messages']} messages ({e['events']} events, {result.get('blobs_deleted', 0)} blobs)"
              + (f"; journal seq {result['seq']}" if result.get("seq") else ""))
    for hid, mids in held.items():
        print(f"  kept {len(mids)} messages under legal hold {hid}")
    return 0


def cmd_hold_add(args: argparse.Namespace) -> int:
    config = config_of(args)
    scope, value = next((s, v) for s, v in (("conversation", args.conversation), ("client", args.client),
                                            ("employee", args.employee)) if v)
    result = write(config, "hold.add", {"scope": scope, "value": value, "reason": args.reason,
                                        "actor": args.actor or default_actor()})
    if args.json:
        emit_json(result)
    else:
        print(f"legal hold {result['hold_id']} on {scope} {value} (journal seq {result['seq']})")
    return 0


def cmd_hold_release(args: argparse.Namespace) -> int:
    config = config_of(args)
    result = write(config, "hold.release", {"hold_id": args.hold_id, "reason": args.reason,
                                            "actor": args.actor or default_actor()})
    if args.json:
        emit_json(result)
    else:
        print(f"legal hold {args.hold_id} released (journal seq {result['seq']})")
    return 0


def cmd_hold_list(args: argparse.Namespace) -> int:
    config = config_of(args)
    holds, restricted = read_journal(config, load_state)
    rows = [h.to_dict() | {"time": iso(h.ts)} for h in holds.values()]
    if args.json:
        emit_json({"holds": rows, "erasure_requests": restricted})
        return 0
    if not rows:
        print("no active legal holds")
    for h in rows:
        print(f"{h['id']}  {h['time']}  {h['scope']} {h['value']}  by {h['actor']}: {h['reason']}")
    return 0


def cmd_erase(args: argparse.Namespace) -> int:
    config = config_of(args)
    result = write(config, "erase.request", {"client": args.client, "reason": args.reason,
                                             "actor": args.actor or default_actor()})
    if args.json:
        emit_json(result)
    else:
        print(f"erasure request {result['request_id']} for {result['client']}: content restricted now (hidden from search"
              f" and export), erased when its retention ends (journal seq {result['seq']})")
    return 0


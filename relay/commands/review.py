"""`relay review list|show|decide|stats|sweep`: the supervision queue from a shell."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from relay.commands.compliance_common import (add_config_arg, add_json_arg, config_of, emit_json, fail,
                                              read_journal, reporting, write)
from relay.commands.common import party_text, quoted
from relay.compliance.restricted import RESTRICTED_NOTE
from relay.compliance.review import DECISIONS, ReviewItem, compliance_settings, load_items, stats, withhold_restricted

STATES = ("open", "escalated", "pending", "closed", "all")


def setup(parser: argparse.ArgumentParser) -> None:
    verbs = parser.add_subparsers(dest="review_command", metavar="VERB")
    verbs.required = True

    p = verbs.add_parser("list", help="the review queue (pending items by default)")
    add_config_arg(p)
    add_json_arg(p)
    p.add_argument("--state", choices=STATES, default="pending",
                   help="pending = open or escalated (default); closed = decided")
    p.add_argument("--rule", help="only items matched by this rule id")
    p.add_argument("--limit", type=int, default=200)
    _add_restricted_args(p)
    p.set_defaults(handler=reporting(cmd_list))

    p = verbs.add_parser("show", help="one item: message, matched rules and spans, decisions")
    add_config_arg(p)
    add_json_arg(p)
    p.add_argument("message_id")
    _add_restricted_args(p)
    p.set_defaults(handler=reporting(cmd_show))

    p = verbs.add_parser("decide", help="record a decision (journaled as review.decided)")
    add_config_arg(p)
    add_json_arg(p)
    p.add_argument("message_id")
    p.add_argument("decision", choices=DECISIONS)
    p.add_argument("--as", dest="reviewer", required=True, help="the reviewer deciding (a name under reviewers:)")
    p.add_argument("--reason", default="", help="why (required except for release and compliant)")
    p.set_defaults(handler=reporting(cmd_decide))

    p = verbs.add_parser("stats", help="open items by rule and age, SLA breaches, decisions per reviewer")
    add_config_arg(p)
    add_json_arg(p)
    p.set_defaults(handler=reporting(cmd_stats))

    p = verbs.add_parser("sweep", help="check SLAs and send due alerts now (relay run does this periodically)")
    add_config_arg(p)
    add_json_arg(p)
    p.set_defaults(handler=reporting(cmd_sweep))


def _add_restricted_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--include-restricted", action="store_true",
                   help="show content under a data-subject erasure request (admin only, with --as)")
    p.add_argument("--as", dest="actor", default="", help="who asks (an admin under reviewers:)")


def _read_items(args: argparse.Namespace, config: Any, message_id: str | None = None,
               pending: bool = False) -> dict[str, ReviewItem]:
    """The queue, with items under an erasure request marked (their content is withheld from
    the summary) unless an admin passed --include-restricted --as NAME."""
    from relay.commands.evidence import admin_check

    admin_check(args)

    async def load(journal: Any) -> dict[str, ReviewItem]:
        items = await load_items(journal, message_id, pending=pending)
        if not args.include_restricted:
            await withhold_restricted(journal, items)
        return items

    return read_journal(config, load)


def _note_withheld(rows: list[dict[str, Any]]) -> None:
    n = sum(1 for r in rows if r.get("restricted"))
    if n:
        print(f"relay: note: withheld the content of {n} review items under erasure requests"
              " (admins: --include-restricted --as NAME)", file=sys.stderr)


def _want(state: str, wanted: str) -> bool:
    if wanted == "all":
        return True
    if wanted == "pending":
        return state in ("open", "escalated")
    if wanted == "closed":
        return state not in ("open", "escalated")
    return state == wanted


def cmd_list(args: argparse.Namespace) -> int:
    config = config_of(args)
    settings = compliance_settings(config.raw)
    items = _read_items(args, config, pending=args.state in ("open", "escalated", "pending"))
    now = time.time()
    rows = [i.summary(now, settings) for i in items.values()
            if _want(i.state, args.state) and (args.rule is None or args.rule in i.rule_ids())]
    rows = rows[: max(0, args.limit)]
    _note_withheld(rows)
    if args.json:
        emit_json(rows)
        return 0
    if not rows:
        print(f"no {args.state} review items")
    for r in rows:
        rules = ",".join(str(x["rule"]) for x in r["rules"])
        breach = " SLA-BREACH" if r["sla_breached"] else ""
        who = (r["sender"] or {}).get("user", "")
        text = f"[{RESTRICTED_NOTE}]" if r.get("restricted") else quoted(r["text"][:60])
        print(f"{r['message_id']}  {r['time']}  {r['state']:<9} {r['action']:<10} {rules:<20} {r['direction']} {who}:"
              f" {text}{breach}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    config = config_of(args)
    settings = compliance_settings(config.raw)
    items = _read_items(args, config, args.message_id)
    item = items.get(args.message_id)
    if item is None:
        raise fail(f"no review item {args.message_id!r} (see: relay review list --state all)")
    r = item.summary(time.time(), settings)
    _note_withheld([r])
    if args.json:
        emit_json(r)
        return 0
    print(f"message   {r['message_id']} (seq {r['seq']}, {r['time']}, conversation {r['conversation']})")
    print(f"from      {party_text(r['sender'])}  direction {r['direction']} channel {r['channel']}")
    print(f"verdict   {r['action']}  state {r['state']}" + (f"  SLA due {r['sla_due']}" if r.get("sla_due") else ""))
    print(f"text      [{RESTRICTED_NOTE}]" if r.get("restricted") else f"text      {quoted(r['text'])}")
    for rule in r["rules"]:
        print(f"rule      {rule['rule']} ({rule['action']}, {rule['severity']}) {rule['title']}  spans {rule['spans']}"
              f" matched {rule['matched']}" + (" sampled" if rule["sampled"] else ""))
    for d in r["decisions"]:
        print(f"decision  {d['time']} {d['decision']} by {d['reviewer']}: {d.get('reason', '')}")
    return 0


def cmd_decide(args: argparse.Namespace) -> int:
    config = config_of(args)
    result = write(config, "review.decide", {"message_id": args.message_id, "decision": args.decision,
                                             "reviewer": args.reviewer, "reason": args.reason})
    if args.json:
        emit_json(result)
    else:
        print(f"{result['message_id']}: {result['decision']} by {result['reviewer']} ({result['role']}) at"
              f" {result['time']}, journal seq {result['seq']}; item is now {result['state']}")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    config = config_of(args)
    settings = compliance_settings(config.raw)
    items = read_journal(config, load_items)
    s: dict[str, Any] = stats(items, time.time(), settings)
    if args.json:
        emit_json(s)
        return 0
    print(f"{s['open']} open of {s['items']} review items")
    for rule, row in sorted(s["open_by_rule"].items()):
        ages = "  ".join(f"{k} {v}" for k, v in row.items() if k != "total")
        print(f"  {rule:<20} {row['total']:>4}   {ages}")
    print(f"{len(s['sla_breaches'])} SLA breaches")
    for b in s["sla_breaches"]:
        print(f"  {b['message_id']} rules {','.join(b['rules'])} state {b['state']} age {b['age_seconds']:.0f}s")
    print("decisions per reviewer")
    for who, row in sorted(s["decisions_per_reviewer"].items()):
        print(f"  {who:<12} " + "  ".join(f"{k} {v}" for k, v in sorted(row.items())))
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    config = config_of(args)
    result = write(config, "review.sweep", {})
    if args.json:
        emit_json(result)
    else:
        print(f"SLA breaches escalated: {len(result['sla_breaches'])}; alerts for notify rules: {len(result['notified'])}")
    return 0

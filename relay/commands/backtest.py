"""`relay policy backtest DIR` and `relay policy shadow-report`; `relay/commands/policy.py`
adds these verbs to its `policy` parser (not in the verb table)."""

from __future__ import annotations

import argparse
from typing import Any

from relay.commands.common import counts_text, quoted
from relay.commands.compliance_common import (add_config_arg, add_json_arg, config_of, emit_json, fail,
                                              read_journal, reporting)


def add_verbs(verbs: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = verbs.add_parser("backtest", help="replay journaled messages through a proposed policy set; report changed verdicts")
    p.add_argument("directory", metavar="DIR", help="the proposed policy directory")
    p.add_argument("--since", metavar="DATE", help="only messages from this date (UTC ISO 8601)")
    p.add_argument("--examples", type=int, default=5, metavar="N", help="examples per rule (default 5)")
    add_config_arg(p)
    add_json_arg(p)
    p.set_defaults(handler=reporting(cmd_backtest))

    p = verbs.add_parser("shadow-report", help="compare the shadow policy set's journaled verdicts with the live ones")
    p.add_argument("--since", metavar="DATE")
    p.add_argument("--examples", type=int, default=5, metavar="N")
    add_config_arg(p)
    add_json_arg(p)
    p.set_defaults(handler=reporting(cmd_shadow))


def _print(rep: dict[str, Any], title: str) -> None:
    print(f"{title}: {rep['compared']} messages compared, {rep['changed']} verdicts would change"
          + (f" (skipped: {counts_text(rep['skipped'])})" if rep["skipped"] else ""))
    for t, n in sorted(rep["transitions"].items()):
        print(f"  {t}: {n}")
    for rid, rc in rep["rules"].items():
        print(f"rule {rid}: {rc['changed']} changed (newly matching {rc['added']}, no longer matching {rc['removed']},"
              f" action changed {rc['action_changed']})")
        for ex in rc["examples"]:
            print(f"    {ex['time']} {ex['message_id']} {ex['direction']}: {quoted(ex['text'][:70])}"
                  f"  {_verdict(ex['recorded'])} -> {_verdict(ex['proposed'])}")


def cmd_backtest(args: argparse.Namespace) -> int:
    from pathlib import Path

    from relay.compliance.backtest import backtest
    from relay.evidence.collect import parse_time
    from relay.policy import PolicyLoadError, load_policy_dir

    config = config_of(args)
    since = parse_time(args.since)
    try:
        ps = load_policy_dir(Path(args.directory))
    except PolicyLoadError as exc:
        raise fail("\n".join(exc.errors)) from None
    groups = {e.id: e.groups for e in config.employees.values()}
    rep = read_journal(config, lambda j: backtest(j, ps, groups, since, args.examples))
    if args.json:
        emit_json(rep)
    else:
        _print(rep, f"backtest of {args.directory} (version {ps.version[:12]})")
    return 0


def cmd_shadow(args: argparse.Namespace) -> int:
    from relay.compliance.backtest import shadow_report
    from relay.evidence.collect import parse_time

    config = config_of(args)
    since = parse_time(args.since)
    rep = read_journal(config, lambda j: shadow_report(j, since, args.examples))
    if args.json:
        emit_json(rep)
    else:
        _print(rep, "shadow policies vs live")
    return 0


def _verdict(v: dict[str, Any]) -> str:
    """`quarantine [MC-002, PII-001]`: an action and the rules that gave it."""
    rules = v.get("rules") or []
    return f"{v['action']} [{', '.join(str(r) for r in rules)}]" if rules else str(v["action"])

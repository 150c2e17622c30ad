"""`relay policy check|test|eval`: validate policy files, run their rule tests, try messages.

`check` prints each problem as `file:line: reason` on stderr (exit 2); `test` runs every
rule's tests and ends with `N passed, M failed`; `eval` turns JSON lines into verdicts.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from collections.abc import Iterable
from typing import Any, TextIO

from relay.model import Attachment
from relay.policy import EvalInput, PolicyLoadError, PolicySet, apply_verdict, load_policy_paths, run_rule_tests


def setup(parser: argparse.ArgumentParser) -> None:
    verbs = parser.add_subparsers(dest="policy_command", metavar="VERB")
    verbs.required = True

    check = verbs.add_parser("check", help="validate policy files; errors as file:line: reason")
    check.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="policy directory or file")
    check.add_argument("--json", action="store_true", help='print {"ok","errors","warnings","version"}')
    check.set_defaults(handler=cmd_check)

    test = verbs.add_parser("test", help="run every rule's tests")
    test.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="policy directory or file")
    test.add_argument("--json", action="store_true", help='print {"passed","failed","failures"}')
    test.set_defaults(handler=cmd_test)

    ev = verbs.add_parser("eval", help="evaluate JSON-lines messages from stdin")
    ev.add_argument("--policies", type=Path, default=Path("policies"), metavar="DIR", help="policy directory")
    ev.set_defaults(handler=cmd_eval)

    from relay.commands.backtest import add_verbs

    add_verbs(verbs)


def _load(paths: list[Path]) -> PolicySet | list[str]:
    try:
        return load_policy_paths(paths)
    except PolicyLoadError as exc:
        return exc.errors


def cmd_check(args: argparse.Namespace) -> int:
    loaded = _load(args.paths)
    if isinstance(loaded, list):
        if args.json:
            _print_json({"ok": False, "errors": loaded, "warnings": [], "version": None})
        else:
            for line in loaded:
                print(line, file=sys.stderr)
        return 2
    warnings = list(loaded.rules_without_tests)
    if args.json:
        _print_json({"ok": True, "errors": [], "warnings": warnings, "version": loaded.version})
    else:
        for line in warnings:
            print(f"warning: {line}", file=sys.stderr)
        print(f"ok: {len(loaded.files)} files, {len(loaded.rules)} rules, version {loaded.version}")
    return 0


def cmd_test(args: argparse.Namespace) -> int:
    loaded = _load(args.paths)
    if isinstance(loaded, list):
        for line in loaded:
            print(line, file=sys.stderr)
        return 2
    results = run_rule_tests(loaded)
    failures = [r for r in results if not r.ok]
    passed = len(results) - len(failures)
    if args.json:
        _print_json(
            {
                "passed": passed,
                "failed": len(failures),
                "failures": [
                    {"rule": r.rule.id, "file": r.rule.file, "line": r.test.line, "test": r.test.index + 1,
                     "expected": r.test.expect, "got": r.got, "text": r.test.input.text}
                    for r in failures
                ],
            }
        )
    else:
        for warning in loaded.rules_without_tests:
            print(f"warning: {warning}", file=sys.stderr)
        for failure in failures:
            print(f"FAIL {failure.describe()}")
        print(f"{passed} passed, {len(failures)} failed")
    return 1 if failures else 0


def cmd_eval(args: argparse.Namespace) -> int:
    loaded = _load([args.policies])
    if isinstance(loaded, list):
        for line in loaded:
            print(line, file=sys.stderr)
        return 2
    return eval_stream(loaded, sys.stdin.buffer, sys.stdout, sys.stderr)


_EVAL_KEYS = {"direction", "channel", "text", "attachments", "sender_group", "sender_groups",
              "first_in_conversation", "message_id", "conversation"}


def parse_eval_line(raw: str, number: int) -> EvalInput:
    """One JSON line into an EvalInput; raises ValueError("why") for bad input."""
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON: {exc.msg} at column {exc.colno}") from exc
    if not isinstance(obj, dict):
        raise ValueError("expected a JSON object")
    unknown = sorted(set(obj) - _EVAL_KEYS)
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r}")
    for key in ("direction", "channel", "text"):
        if key not in obj:
            raise ValueError(f"missing {key!r}")
        if not isinstance(obj[key], str):
            raise ValueError(f"{key!r} must be a string")
    if obj["direction"] not in ("inbound", "outbound"):
        raise ValueError(f"'direction' must be inbound or outbound, not {obj['direction']!r}")
    groups = obj.get("sender_groups", obj.get("sender_group", []))
    if isinstance(groups, str):
        groups = [groups]
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise ValueError("'sender_group' must be a string or a list of strings")
    first = obj.get("first_in_conversation", False)
    if not isinstance(first, bool):
        raise ValueError("'first_in_conversation' must be true or false")
    for key in ("message_id", "conversation"):
        if not isinstance(obj.get(key, ""), str):
            raise ValueError(f"{key!r} must be a string")
    return EvalInput(
        direction=obj["direction"],
        channel=obj["channel"],
        text=obj["text"],
        attachments=_attachments(obj.get("attachments", [])),
        sender_groups=tuple(groups),
        first_in_conversation=first,
        conversation=obj.get("conversation", ""),
        message_id=obj.get("message_id") or f"line-{number}",
    )


def _attachments(raw: Any) -> tuple[Attachment, ...]:
    if not isinstance(raw, list):
        raise ValueError("'attachments' must be a list")
    out: list[Attachment] = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise ValueError(f"attachments[{i}] must be an object")
        name, mime, size = item.get("name"), item.get("mime", ""), item.get("size", 0)
        if not isinstance(name, str) or not name:
            raise ValueError(f"attachments[{i}].name must be a non-empty string")
        if not isinstance(mime, str):
            raise ValueError(f"attachments[{i}].mime must be a string")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ValueError(f"attachments[{i}].size must be a non-negative integer (bytes)")
        out.append(Attachment(name=name, mime=mime, size=size))
    return tuple(out)


def eval_stream(policy_set: PolicySet, lines: Iterable[bytes | str], stdout: TextIO, stderr: TextIO) -> int:
    """Evaluate each JSON line; a bad line yields {"error"} and processing continues."""
    bad = 0
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            if isinstance(raw, bytes):
                try:
                    raw = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise ValueError(f"not valid UTF-8 at byte {exc.start + 1}") from exc
            inp = parse_eval_line(raw, number)
        except ValueError as exc:
            bad += 1
            message = f"line {number}: {exc}"
            print(json_line({"error": message}), file=stdout, flush=True)
            print(f"relay: {message}", file=stderr)
            continue
        verdict = policy_set.evaluate(inp)
        out = {
            "action": verdict.action,
            "rules": list(verdict.rules),
            "text": apply_verdict(inp.text, verdict),
            "policy_version": verdict.policy_version,
            "review": verdict.review,
        }
        print(json_line(out), file=stdout, flush=True)
    return 1 if bad else 0


def json_line(obj: dict[str, Any]) -> str:
    """Compact JSON, readable UTF-8 unless the text holds lone surrogates (then escaped)."""
    line = json.dumps(obj, ensure_ascii=False)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        line = json.dumps(obj)
    return line


def _print_json(obj: dict[str, Any]) -> None:
    print(json.dumps(obj, ensure_ascii=False, indent=None))

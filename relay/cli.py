"""The `relay` command: finds every module in relay/commands and lets each add its verbs.

Errors go to stderr as one line per problem with a non-zero exit; `--json` gives machine output.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

import relay.commands


class CommandError(Exception):
    """A user-facing failure: printed as `relay: <message>` with exit code `code`."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="relay", description="Compliant chat relay.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for info in sorted(pkgutil.iter_modules(relay.commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"relay.commands.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(handler(args) or 0)
    except CommandError as exc:
        for line in str(exc).splitlines() or [""]:
            print(f"relay: {line}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    # Run as `python -m relay.cli`, this file is `__main__`; the commands raise
    # `relay.cli.CommandError`, so dispatch through the imported module, not this copy.
    from relay.cli import main as _main

    sys.exit(_main())

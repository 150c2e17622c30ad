"""The `relay` command: lists the verbs of `relay.commands.VERBS` and imports a verb's module only
when that verb is picked, so `relay --help` and light verbs start without the heavy imports.

Errors go to stderr as one line per problem with a non-zero exit; `--json` gives machine output.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Any

from relay import __version__
from relay.commands import VERBS


class CommandError(Exception):
    """A user-facing failure: printed as `relay: <message>` with exit code `code`."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


class _LazyVerbs(argparse._SubParsersAction):  # type: ignore[type-arg]
    """Each verb's parser starts empty (name and help only); its module adds the arguments when
    argparse picks the verb, just before the verb's parser reads the rest of the command line."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._set_up: set[str] = set()

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        name = values[0]
        verb_parser = self._name_parser_map.get(name)
        if verb_parser is not None and name not in self._set_up:
            module, function = VERBS[name].setup.split(":")
            getattr(importlib.import_module(f"relay.commands.{module}"), function)(verb_parser)
            self._set_up.add(name)
        super().__call__(parser, namespace, values, option_string)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="relay", description="Compliant chat relay.")
    parser.add_argument("--version", action="version", version=f"relay {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", action=_LazyVerbs)
    sub.required = True
    for name, verb in VERBS.items():
        sub.add_parser(name, help=verb.help)
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

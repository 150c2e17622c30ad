"""`relay hash-password`: make a `password_hash` value for config.yaml without echoing the password."""

from __future__ import annotations

import argparse
import getpass
import sys

from relay.cli import CommandError
from relay.passwords import hash_password


def setup(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Print a password_hash for config.yaml. The password is read from stdin "
                          "(first line), or prompted twice without echo when stdin is a terminal.")
    parser.set_defaults(handler=run)


def _read_password() -> str:
    if sys.stdin is not None and sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        second = getpass.getpass("Repeat password: ")
        if first != second:
            raise CommandError("the two passwords differ; nothing printed", 1)
        return first
    line = sys.stdin.readline() if sys.stdin is not None else ""
    return line.rstrip("\r\n")


def run(args: argparse.Namespace) -> int:
    """Print the hash; errors are printed here, not raised, so `python -m relay.cli` reports them too."""
    try:
        password = _read_password()
        if not password:
            raise CommandError("empty password; give one on stdin, e.g. `printf %s 'secret' | relay hash-password`", 1)
    except CommandError as exc:
        print(f"relay: {exc}", file=sys.stderr)
        return exc.code
    print(hash_password(password))
    return 0

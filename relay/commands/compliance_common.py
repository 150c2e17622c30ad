"""Helpers for the compliance commands (review, handover, retention, export): no verbs here.

Reads open the journal read-only, so they work while `relay run` is running; writes go
through `relay.admin.run_action` (the running relay's admin API, or the relay offline).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from relay.cli import CommandError
from relay.commands.common import add_config_arg, add_json_arg, config_of, emit_json
from relay.config import Config

T = TypeVar("T")

__all__ = ["add_config_arg", "add_json_arg", "config_of", "emit_json", "reporting", "read_journal", "write",
           "default_actor", "fail"]


def fail(message: str, code: int = 2) -> CommandError:
    return CommandError(message, code)


def reporting(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Print user errors as `relay: …` lines whichever module object `relay.cli` is (under
    `python -m relay.cli` the class cli.main catches is `__main__.CommandError`). The error
    classes are imported when the handler runs: `relay VERB --help` needs none of them."""

    def run(args: argparse.Namespace) -> int:
        from relay.admin import AdminError
        from relay.evidence import ExportError, FilterError
        from relay.evidence.keys import KeyError_
        from relay.compliance.retention import RetentionError

        try:
            return int(handler(args) or 0)
        except CommandError as exc:
            msg, code = str(exc), exc.code
        except (AdminError, ExportError, FilterError, KeyError_, RetentionError) as exc:
            msg, code = str(exc), 2
        for line in msg.splitlines() or [""]:
            print(f"relay: {line}", file=sys.stderr)
        return code

    return run


def read_journal(config: Config, fn: Callable[[Any], Awaitable[T]]) -> T:
    """Run `fn(journal)` on the journal opened read-only."""
    from relay.journal import Journal, JournalError

    async def go() -> T:
        try:
            journal = await Journal.open(config.data_dir, read_only=True, hmac_key=config.hmac_key)
        except JournalError as exc:
            raise fail(f"{exc}") from None
        try:
            return await fn(journal)
        finally:
            await journal.close()

    return asyncio.run(go())


def write(config: Config, action: str, params: dict[str, Any]) -> dict[str, Any]:
    from relay.admin import AdminError, run_action
    from relay.config import ConfigError

    try:
        return run_action(config, action, params)
    except AdminError as exc:
        raise fail(str(exc)) from None
    except ConfigError as exc:
        raise fail("\n".join(exc.problems)) from None


def default_actor() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return ""

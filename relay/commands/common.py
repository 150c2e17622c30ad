"""Helpers shared by the CLI modules: the --config option and loading it with clear errors."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from relay.cli import CommandError
from relay.config import Config, ConfigError, load_config

DEFAULT_CONFIG = "config.example.yaml"


def add_config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=DEFAULT_CONFIG, help=f"config file (default: {DEFAULT_CONFIG})")


def add_json_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def config_of(args: argparse.Namespace) -> Config:
    try:
        return load_config(args.config)
    except ConfigError as exc:
        raise CommandError("\n".join(exc.problems), 2) from exc


def journal_settings_of(args: argparse.Namespace) -> Any:
    """The journal's settings (data directory, keys) from --config / --data-dir, errors as CommandError."""
    from relay.journal import settings as journal_settings

    try:
        return journal_settings.load(args.config, args.data_dir)
    except journal_settings.SettingsError as exc:
        raise CommandError(str(exc)) from None


def emit_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, ensure_ascii=False, sort_keys=True) + "\n")


def party_text(party: Any) -> str:
    """`Vera (v1 on webchat)` for a party mapping, never a Python dict; `-` when there is none."""
    if not isinstance(party, dict) or not party:
        return "-" if not party else str(party)
    user, channel, display = party.get("user") or "", party.get("channel") or "", party.get("display") or ""
    where = " on ".join(x for x in (str(user), str(channel)) if x)
    return f"{display} ({where})" if display and where else (display or where or "-")


def quoted(text: str) -> str:
    """A message text on one line, in double quotes with control characters escaped (JSON style)."""
    return json.dumps(text, ensure_ascii=False)


def counts_text(counts: Any) -> str:
    """`3 erasure request, 1 no text` for a {reason: count} mapping."""
    return ", ".join(f"{n} {why}" for why, n in sorted(dict(counts).items()))

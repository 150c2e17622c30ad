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

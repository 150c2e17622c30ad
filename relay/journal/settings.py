"""Just enough of config.yaml for the journal commands: data_dir and the `journal:` block.

Kept separate from relay.config so the journal CLI works on its own; `--data-dir` overrides.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class SettingsError(Exception):
    """The config cannot be read; the message names the file and the problem."""


@dataclass(frozen=True)
class JournalSettings:
    data_dir: Path
    hmac_key: bytes | None = None
    checkpoint_every: int = 1000
    checkpoint_seconds: float = 60.0
    checkpoint_dir: Path | None = None
    synchronous: str = "FULL"
    witnesses: tuple[Any, ...] = ()
    """`journal.witnesses`, built: what `verify --witness` reads back."""
    replica: Any = None
    """`journal.replica`, built (relay/journal/replica.py): the WORM copy, or None."""
    url: str | None = None
    """`postgresql://user@host:port/db`: the journal is on PostgreSQL (password from ${ENV})."""

    def open_kwargs(self) -> dict[str, Any]:
        return {
            "hmac_key": self.hmac_key,
            "checkpoint_every": self.checkpoint_every,
            "checkpoint_seconds": self.checkpoint_seconds,
            "checkpoint_dir": self.checkpoint_dir,
            "synchronous": self.synchronous,
        }


def expand_env(value: str, where: str) -> str:
    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise SettingsError(f"{where}: environment variable {name} is not set")
        return os.environ[name]

    return _ENV.sub(sub, value)


def load(config: Path | None, data_dir: Path | None = None) -> JournalSettings:
    """Settings from `config` (if it exists), with `data_dir` overriding the file's."""
    doc: dict[str, Any] = {}
    if config is not None and (data_dir is None or config.exists()):
        try:
            loaded = yaml.safe_load(config.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SettingsError(f"{config}: no such config file (or pass --data-dir)") from None
        except (OSError, yaml.YAMLError) as exc:
            raise SettingsError(f"{config}: cannot read: {exc}") from None
        doc = loaded if isinstance(loaded, dict) else {}
    block = doc.get("journal") or {}
    if not isinstance(block, dict):
        raise SettingsError(f"{config}: journal: must be a mapping")
    where = str(config)

    def text(value: Any, name: str) -> str | None:
        if value is None:
            return None
        if not isinstance(value, (str, int, float)):
            raise SettingsError(f"{where}: {name} must be a string")
        return expand_env(str(value), f"{where}: {name}")

    base = config.parent if config is not None else Path.cwd()

    def from_file(value: str) -> Path:
        """Relative paths in the file mean relative to the file, as in relay.config."""
        p = Path(value).expanduser()
        return p if p.is_absolute() else (base / p).resolve()

    root = data_dir if data_dir is not None else from_file(text(doc.get("data_dir"), "data_dir") or "./data")
    key = text(block.get("hmac_key"), "journal.hmac_key")
    cp_text = text(block.get("checkpoint_dir"), "journal.checkpoint_dir")
    cp_dir = from_file(cp_text) if cp_text else None
    from relay.journal.witness import WitnessError, from_config

    from relay.journal.replica import ReplicaError, target_from_config

    try:
        witnesses = tuple(from_config(block.get("witnesses"), base))
        replica = target_from_config(block.get("replica"), base)
    except (WitnessError, ReplicaError) as exc:
        raise SettingsError(f"{where}: {exc}") from None
    try:
        return JournalSettings(
            data_dir=Path(root),
            hmac_key=key.encode() if key else None,
            checkpoint_every=int(block.get("checkpoint_every", 1000)),
            checkpoint_seconds=float(block.get("checkpoint_seconds", 60.0)),
            checkpoint_dir=cp_dir,
            synchronous=str(block.get("synchronous", "FULL")),
            witnesses=witnesses,
            replica=replica,
            url=text(block.get("url"), "journal.url"),
        )
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"{where}: journal: {exc}") from None

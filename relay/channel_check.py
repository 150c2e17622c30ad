"""Every channel block is tried against its network's factory before the relay writes anything.

A wrong network or setting is then a `file:line: channels.NAME.KEY: reason` line (with a near
miss suggested) before the data directory exists, not a traceback after the journal opened.
Each factory runs on a scratch context (a throwaway web app, memory state, a temporary data
directory): factories only read settings and add routes; networking starts in `start`.
"""

from __future__ import annotations

import re
import tempfile

from aiohttp import web

from bots.base import ChannelConfigError, ChannelContext, EmployeeInfo, load_factory
from relay.config import Config, ConfigError, did_you_mean

GENERIC_KEYS = ("network", "side", "welcome", "enabled", "give_up_after")
"""Keys of a channel block that the relay itself reads (config.py), whatever the network."""
_PREFIX = re.compile(r"^(?:channel [^:]+: |channels\.[^.:]+\.(?P<key>[^:]+): )")


class _ScratchState:
    """Channel state for the check: in memory, dropped afterwards."""

    def __init__(self) -> None:
        self._values: dict[str, str] = {}

    async def get(self, key: str) -> str | None:
        return self._values.get(key)

    async def put(self, key: str, value: str) -> None:
        self._values[key] = value


def channel_problems(cfg: Config) -> list[str]:
    """One line per channel block its network refuses (empty when every block is fine)."""
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="relay-check-") as scratch:
        app = web.Application()
        for name, ch in cfg.channels.items():
            try:
                factory = load_factory(ch.network)
                employees = {e.address: EmployeeInfo(e.id, e.name, e.address, e.password_hash, e.active)
                             for e in cfg.employees.values() if e.channel == name}
                ctx = ChannelContext(name=name, side=ch.side, state=_ScratchState(), app=app, data_dir=scratch,
                                     max_attachment_bytes=cfg.max_attachment_bytes, wake=lambda address: None,
                                     employees=employees, public_url=cfg.public_url)
                factory(name, dict(ch.settings), ctx)
            except ChannelConfigError as exc:
                problems.append(_line(cfg, name, exc))
            except Exception as exc:  # noqa: BLE001 (a factory bug on odd settings is still a config line)
                problems.append(f"{cfg.where('channels', name)}: channels.{name}: the {ch.network} network refused "
                                f"these settings ({type(exc).__name__}: {exc})")
    return problems


def check_channels(cfg: Config) -> None:
    """Raise ConfigError naming every refused channel block."""
    problems = channel_problems(cfg)
    if problems:
        raise ConfigError(problems)


def _line(cfg: Config, name: str, exc: ChannelConfigError) -> str:
    message = str(exc)
    found = _PREFIX.match(message)
    setting = exc.setting or (found.group("key") if found and found.group("key") else None)
    reason = message[found.end():] if found else message
    if setting == "network":
        hint = did_you_mean(cfg.channels[name].network, exc.known)
    elif setting is not None and exc.known:
        hint = did_you_mean(setting, set(exc.known) | set(GENERIC_KEYS))
    else:
        hint = ""
    path = ("channels", name, setting) if setting else ("channels", name)
    return f"{cfg.where(*path)}: {'.'.join(path)}: {reason}{hint}"

"""Retention classes and periods: how long each conversation's record is kept (`retention:`).

Applying them is `relay.compliance.erasure`; what stops erasure is `relay.compliance.holds`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping

YEAR = 365.2425 * 86400
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(y|mo|w|d|h|m|s)\s*$")
_UNIT = {"y": YEAR, "mo": YEAR / 12, "w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}

DEFAULT_PERIOD = "6y"
"""FINRA Rule 4511 / SEA 17a-4(b)(4): business communications kept six years."""


class RetentionError(ValueError):
    """A retention setting or request that cannot be applied; the message says what to fix."""


def parse_duration(value: str | int | float, where: str = "duration") -> float:
    """`6y`, `18mo`, `90d`, `24h`, `30m` or seconds as a number."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    m = _DURATION.match(str(value))
    if not m:
        raise RetentionError(f"{where}: {value!r} is not a duration (e.g. 6y, 18mo, 90d, 24h, 30m)")
    return float(m.group(1)) * _UNIT[m.group(2)]


@dataclass(frozen=True)
class RetentionClass:
    name: str
    seconds: float
    channels: tuple[str, ...] = ()
    desks: tuple[str, ...] = ()


@dataclass(frozen=True)
class RetentionSettings:
    """`retention:` in config: a default period and named classes per desk or channel."""

    default: RetentionClass
    classes: tuple[RetentionClass, ...] = ()
    desk_of_channel: Mapping[str, str] = field(default_factory=dict)

    def for_channel(self, channel: str) -> RetentionClass:
        """The class for a conversation's client channel; the longest period when several match."""
        desk = self.desk_of_channel.get(channel)
        matches = [c for c in self.classes if channel in c.channels or (desk is not None and desk in c.desks)]
        return max(matches, key=lambda c: c.seconds) if matches else self.default


def retention_settings(raw: Mapping[str, Any] | None, desks: Mapping[str, Any] | None = None) -> RetentionSettings:
    raw = raw or {}
    default = RetentionClass("default", parse_duration(raw.get("default", DEFAULT_PERIOD), "retention.default"))
    classes = []
    for name, block in (raw.get("classes") or {}).items():
        classes.append(RetentionClass(name, parse_duration(block["period"], f"retention.classes.{name}.period"),
                                      tuple(block.get("channels") or ()), tuple(block.get("desks") or ())))
    desk_of: dict[str, str] = {}
    for dname, desk in (desks or {}).items():
        for ch in getattr(desk, "clients", None) or (desk.get("clients", ()) if isinstance(desk, dict) else ()):
            desk_of[ch] = dname
    return RetentionSettings(default, tuple(classes), desk_of)


def settings_of(app: Any) -> RetentionSettings:
    return retention_settings(app.config.raw.get("retention"), app.config.desks)

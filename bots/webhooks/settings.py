"""Reading the settings every webhook channel has in common, with the same error messages."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from bots.base import ChannelConfigError, ChannelContext, unknown_settings


def required_setting(name: str, settings: Mapping[str, Any], key: str) -> str:
    value = settings.get(key)
    if not isinstance(value, str) or not value:
        raise ChannelConfigError(f"channel {name}: `{key}` is required (a non-empty string)")
    return value


def refuse_unknown_settings(name: str, settings: Mapping[str, Any], known: type) -> None:
    """ChannelConfigError naming every setting that is not a field of the dataclass `known`."""
    names = {f.name for f in fields(known)}
    unknown = sorted(set(settings) - names)
    if unknown:
        raise unknown_settings(name, "", unknown, names)


def timeout_setting(name: str, settings: Mapping[str, Any], default: float) -> float:
    try:
        return float(settings.get("timeout", default))
    except (TypeError, ValueError):
        raise ChannelConfigError(f"channel {name}: `timeout` must be a number of seconds") from None


def require_client_side(name: str, network: str, ctx: ChannelContext) -> None:
    if ctx.side != "client":
        raise ChannelConfigError(f"channel {name}: {network} is a client-side network (side: client)")

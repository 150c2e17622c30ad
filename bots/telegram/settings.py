"""The Telegram channel's config block, checked once at start-up so that every mistake names
the channel and the field (see config.example.yaml)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from bots.base import ChannelConfigError, ChannelContext


@dataclass(frozen=True)
class TelegramSettings:
    """A validated channel block (see config.example.yaml)."""

    token: str
    side: str
    mode: str = "polling"
    webhook_secret: str = ""
    webhook_path: str = ""
    base_url: str = "https://api.telegram.org/bot"
    base_file_url: str = "https://api.telegram.org/file/bot"
    staff_group: int | None = None
    poll_timeout: float = 30.0
    album_window: float = 1.0
    request_timeout: float = 10.0
    backoff_max: float = 30.0
    max_concurrent_sends: int = 4
    """Requests in flight at once. Telegram allows about 30 messages/s per bot and 20 per
    minute into one group, so the staff side (one group) needs fewer than the client side."""


def parse_settings(name: str, settings: Mapping[str, Any], ctx: ChannelContext) -> TelegramSettings:
    """Check a channel block; every problem names the channel and the field."""

    def fail(key: str, why: str) -> ChannelConfigError:
        return ChannelConfigError(f"channels.{name}.{key}: {why}")

    known = {
        "token", "side", "mode", "webhook_secret", "webhook_path", "base_url", "base_file_url",
        "staff_group", "poll_timeout", "album_window", "request_timeout", "backoff_max", "max_concurrent_sends",
    }
    for key in settings:
        if key not in known:
            raise ChannelConfigError(f"channels.{name}.{key}: unknown telegram setting (known: {', '.join(sorted(known))})",
                                     setting=key, known=tuple(sorted(known)))
    token = str(settings.get("token") or "").strip()
    if not token:
        raise fail("token", "missing bot token (use token: ${TELEGRAM_TOKEN})")
    side = str(settings.get("side") or ctx.side)
    if side not in ("client", "staff"):
        raise fail("side", f"must be client or staff, not {side!r}")
    mode = str(settings.get("mode", "polling"))
    if mode not in ("polling", "webhook"):
        raise fail("mode", f"must be polling or webhook, not {mode!r}")
    secret = str(settings.get("webhook_secret") or "")
    if mode == "webhook":
        if not secret or len(secret) > 256 or not all(c.isalnum() or c in "_-" for c in secret):
            raise fail("webhook_secret", "webhook mode needs a secret of 1-256 characters A-Z a-z 0-9 _ -")
    staff_group: int | None = None
    if side == "staff":
        raw_group = settings.get("staff_group")
        try:
            staff_group = int(str(raw_group))
        except ValueError:
            raise fail("staff_group", "the staff side needs the chat id of the forum supergroup (e.g. -1001234567890)") from None

    def number(key: str, default: float, minimum: float) -> float:
        value = settings.get(key, default)
        try:
            out = float(value)
        except (TypeError, ValueError):
            raise fail(key, f"must be a number, not {value!r}") from None
        if out < minimum:
            raise fail(key, f"must be at least {minimum}")
        return out

    return TelegramSettings(
        token=token,
        side=side,
        mode=mode,
        webhook_secret=secret,
        webhook_path=str(settings.get("webhook_path") or f"/telegram/{name}"),
        base_url=str(settings.get("base_url") or "https://api.telegram.org/bot"),
        base_file_url=str(settings.get("base_file_url") or "https://api.telegram.org/file/bot"),
        staff_group=staff_group,
        poll_timeout=number("poll_timeout", 30.0, 0.0),
        album_window=number("album_window", 1.0, 0.0),
        request_timeout=number("request_timeout", 10.0, 0.1),
        backoff_max=number("backoff_max", 30.0, 0.1),
        max_concurrent_sends=int(number("max_concurrent_sends", 2 if side == "staff" else 4, 1)),
    )

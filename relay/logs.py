"""Logging for `relay run`: the relay's own lines never carry message content or secrets, and the
libraries that would (request URLs holding bot tokens, request bodies, SQL parameters, stanzas)
are held at WARNING whatever `log_level` says."""

from __future__ import annotations

import logging

QUIET_LIBRARIES: tuple[str, ...] = (
    "httpx",        # INFO: every request URL, and Telegram's URLs hold the bot token
    "httpcore",
    "telegram",     # DEBUG: every Bot API call with its parameters (message texts)
    "slixmpp",      # DEBUG: every stanza sent and received
    "aiosqlite",    # DEBUG: every call with its SQL parameters (journal bodies)
    "twilio",       # INFO: request payloads
    "slack_sdk",    # DEBUG: request bodies
)


def configure(level: str) -> None:
    """Root at `level` (config `log_level`), the libraries above at WARNING or higher."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    named = logging.getLevelName(level)
    floor = max(logging.WARNING, named if isinstance(named, int) else 0)
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(floor)

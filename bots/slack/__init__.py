"""Slack for employees (network `slack`, staff side): one thread per client conversation.

`channel` receives the Events API (signed, `X-Slack-Signature`) and sends with slack_sdk's
AsyncWebClient; `events` turns an event into an Inbound; `threads` keeps conversation ↔
thread; `settings` reads the config block.
"""

from bots.slack.channel import create

__all__ = ["create"]

"""Network `webdesk`: the employee desk of the web chat (the code lives in bots/webchat/desk.py)."""

from bots.webchat.desk import WebDeskChannel, create

__all__ = ["WebDeskChannel", "create"]

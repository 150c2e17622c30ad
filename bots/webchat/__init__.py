"""The embedded default channels: web chat for clients (network `webchat`) and the employee desk.

The desk is its own network, `webdesk` (bots/webdesk.py), sharing this package's code.
"""

from bots.webchat.client import WebChatChannel, create

__all__ = ["WebChatChannel", "create"]

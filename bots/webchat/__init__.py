"""The embedded default channels: web chat for clients (network `webchat`) and the employee desk.

The desk is its own network, `webdesk` (`bots.webchat.desk`, found through the network table in
`bots.base`), sharing this package's sockets, sessions and pages.
"""

from bots.webchat.client import WebChatChannel, create

__all__ = ["WebChatChannel", "create"]

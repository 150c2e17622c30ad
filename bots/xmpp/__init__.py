"""XMPP for both sides of a desk: a component (XEP-0114) for staff, an account for clients.

Staff side (`mode: component`): each conversation is its own contact
`<conversation>@<component domain>` in the assigned employee's roster, so replying needs no
command. Client side (`mode: client`): the relay logs in as an ordinary account and every
sender JID is a client.

What lives where: `channel` (the stream, intake, receipts, presence), `reading` (stanza →
Inbound), `sending` (outgoing stanzas), `transfers` (upload service and allowed fetches),
`files` (bounded HTTP), `link` (connection and stream management), `stanzas` (pure XML),
`fastxml` (slixmpp hot paths), `settings` (the config block), `host` (what helpers see).
"""

from __future__ import annotations

from typing import Any, Mapping

from bots.base import ChannelContext
from bots.xmpp.channel import XmppChannel
from bots.xmpp.settings import XmppSettings, parse_settings

__all__ = ["XmppChannel", "XmppSettings", "create"]


def create(name: str, settings: Mapping[str, Any], ctx: ChannelContext) -> XmppChannel:
    """Build the channel from its config block; raises ChannelConfigError naming the field."""
    return XmppChannel(name, parse_settings(name, settings, ctx.side), ctx)

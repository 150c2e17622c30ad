"""What the XMPP channel's helpers (reading, sending, transfers) see of the channel, and the
JID helper they share. `ctx` is read at each use, never copied: a restart may hand the
channel another context (e.g. the previous run's state store)."""

from __future__ import annotations

from typing import Protocol

from slixmpp import JID
from slixmpp.jid import InvalidJID

from bots.base import ChannelContext
from bots.xmpp.link import Link
from bots.xmpp.settings import XmppSettings


class Host(Protocol):
    """The XmppChannel, as far as its helpers need it."""

    name: str
    settings: XmppSettings
    ctx: ChannelContext
    staff: bool
    link: Link


def bare(jid: str) -> str:
    """The bare JID of `jid`, or "" when it is empty or not a JID."""
    if not jid:
        return ""
    try:
        return JID(jid).bare
    except InvalidJID:
        return ""

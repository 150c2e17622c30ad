"""The seam between the relay core and a chat network.

A network is one module `bots/<network>.py` (or package) that exposes
`create(name, settings, ctx) -> Channel`. The adapter only translates its wire format to
`relay.model` values and back; journaling, policy, routing and retries live in the core.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Mapping, Protocol, runtime_checkable

from aiohttp import web

from relay.model import Attachment, ConversationItem, HistoryItem, HistoryPage, Inbound, Outgoing, Receipt

Deliver = Callable[[Inbound], Awaitable[Receipt]]
"""Hand an inbound to the hub; returns only after it is durably journaled (or deduplicated)."""


class DeliveryError(Exception):
    """Base of the errors `Channel.send` may raise; the outbox journals every one."""


class Retryable(DeliveryError):
    """Temporary failure (429, 5xx, timeout, peer offline): try again, not before `after` s."""

    def __init__(self, reason: str, after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.after = after


class Permanent(DeliveryError):
    """Will never succeed as sent (blocked by user, chat not found, bad request)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class StateStore(Protocol):
    """Durable key/value state for an adapter (topic ids, JID maps, tokens), per channel.

    Backed by the journal database, so maps survive restarts; `put` returns after commit.
    """

    async def get(self, key: str) -> str | None: ...

    async def put(self, key: str, value: str) -> None: ...


class History(Protocol):
    """Read-only access to the journal's record of an employee's conversations (a desk's history).

    Only conversations assigned to `employee` (an employee id) are answered; any other raises
    `relay.model.HistoryRefused`. `before` is a seq cursor (None: from the newest); at most
    `limit` items per answer.
    """

    async def conversations(self, employee: str, before: int | None,
                            limit: int) -> tuple[tuple[ConversationItem, ...], bool]:
        """(assigned conversations, newest activity first; whether more exist before the last)."""

    async def messages(self, employee: str, conversation: str, before: int | None, limit: int) -> HistoryPage:
        """The messages of `conversation` before seq `before`, oldest first."""

    async def message(self, employee: str, message_id: str) -> HistoryItem | None:
        """One message by relay id, if it is in a conversation assigned to `employee`."""

    async def attachment(self, employee: str, message_id: str, sha256: str) -> Attachment | None:
        """A file of that message as its item shows it, bytes included (None if not shown or gone)."""


@dataclass(frozen=True)
class EmployeeInfo:
    """An employee as a staff-side adapter needs to know them."""

    id: str
    name: str
    address: str
    password_hash: str = ""
    active: bool = True


@dataclass
class ChannelContext:
    """What the host gives an adapter at construction.

    `app` is the one aiohttp Application (add webhook routes to `app.router` in `create`,
    before the app starts). `wake(address)` asks the outbox to retry at once every pending
    delivery to `address` on this channel (e.g. a desk user just connected).
    `employees` lists the employees whose staff endpoint is this channel (keyed by address).
    `history` reads back a staff channel's conversations from the journal (None: not offered).
    """

    name: str
    side: str
    state: StateStore
    app: web.Application
    data_dir: str
    max_attachment_bytes: int
    wake: Callable[[str], None]
    employees: Mapping[str, EmployeeInfo] = field(default_factory=dict)
    public_url: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)
    reopened: Callable[[str, str], Awaitable[None]] | None = None
    """`reopened(address, conversation)`: the staff-side place of a conversation (a forum topic)
    was lost and opened anew for `address`; the relay sends the recent history there, journaled."""
    history: History | None = None


@runtime_checkable
class Channel(Protocol):
    """A configured instance of a network, e.g. `telegram-clients`."""

    name: str

    async def start(self, deliver: Deliver) -> None:
        """Begin receiving; call `deliver(inbound)` per received item. Must not block."""

    async def send(self, out: Outgoing) -> str:
        """Deliver `out`; return its platform id. Raise `Retryable` or `Permanent`."""

    async def stop(self) -> None:
        """Stop receiving and release connections."""


@runtime_checkable
class StaffSessions(Protocol):
    """A staff-side channel that holds employees' live logins (the web desk).

    When an employee is deactivated the relay calls `end_sessions` right after recording it,
    so what they already have open ends too, not only what they would open next.
    """

    async def end_sessions(self, address: str, reason: str) -> int:
        """End every login of `address` and close their open connections, telling them `reason`;
        returns how many connections were closed."""


@runtime_checkable
class LiveConversations(Protocol):
    """A staff-side channel that keeps conversations open in live views (the web desk).

    When a conversation is handed to someone else the relay calls `handed_away` right after
    recording it, so the previous employee's open views stop offering it at once.
    """

    async def handed_away(self, address: str, conversation: str, to: str) -> int:
        """Tell the open views of `address` that `conversation` now belongs to `to` (a display
        name); returns how many connections were told."""


ChannelFactory = Callable[[str, Mapping[str, Any], ChannelContext], Channel]


class ChannelConfigError(ValueError):
    """A channel block in the config is wrong; the message names the channel and field.

    `setting` is the offending key of the block when one is, and `known` the keys the network
    accepts, so the host can point at the line and suggest a near miss.
    """

    def __init__(self, message: str, *, setting: str | None = None, known: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.setting = setting
        self.known = known


def unknown_settings(name: str, network: str, unknown: Any, known: Any) -> ChannelConfigError:
    """The error for keys of channel `name` that its network does not have (the first is named);
    `network` is the word put before "setting(s)" ("" for none)."""
    bad = sorted(str(k) for k in unknown)
    kind = f"{network} " if network else ""
    return ChannelConfigError(f"channel {name}: unknown {kind}setting(s) {', '.join(bad)} "
                              f"(known: {', '.join(sorted(known))})", setting=bad[0], known=tuple(sorted(known)))


# Networks whose code lives in a package named otherwise; every other network NAME is `bots/NAME`.
NETWORKS: dict[str, str] = {
    "webdesk": "bots.webchat.desk",  # the employee desk shares the web chat's package
}


def network_module(network: str) -> str:
    """The module that implements `network`: an entry of NETWORKS, else `bots.<network>`."""
    return NETWORKS.get(network, f"bots.{network}")


def load_factory(network: str) -> ChannelFactory:
    """The `create` function of the network's module (see NETWORKS and `network_module`)."""
    if not network.replace("_", "").isalnum():
        raise ChannelConfigError(f"unknown network {network!r}", setting="network", known=known_networks())
    name = network_module(network)
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("bots."):
            raise ChannelConfigError(f"unknown network {network!r}: no package bots/{network}",
                                     setting="network", known=known_networks()) from exc
        raise
    factory = getattr(module, "create", None)
    if factory is None:
        raise ChannelConfigError(f"{name} has no create(name, settings, ctx)")
    return factory


def known_networks() -> tuple[str, ...]:
    """Every network name a channel block may use: the packages of bots/ and the NETWORKS aliases."""
    import bots

    names = {m.name for m in pkgutil.iter_modules(bots.__path__) if m.ispkg} | set(NETWORKS)
    return tuple(sorted(names))

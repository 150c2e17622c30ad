"""Plain data that crosses the seams between channels, policy, journal and hub.

Everything here is a frozen dataclass with no behaviour beyond small derived values, so
that bots/ can depend on this module alone and the core can treat every network alike.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Literal

Direction = Literal["inbound", "outbound"]
"""`inbound`: written by a client, travelling to an employee; `outbound`: the reverse."""

Kind = Literal["message", "edit", "delete", "reaction", "event"]
Side = Literal["client", "staff"]

ACTIONS: tuple[str, ...] = ("allow", "flag", "redact", "quarantine", "block")
"""Verdict actions, least to most severe; the most severe matched action wins."""

SEVERITIES: tuple[str, ...] = ("low", "medium", "high", "critical")


def action_rank(action: str) -> int:
    """Position of a verdict action in precedence order (allow=0 … block=4)."""
    return ACTIONS.index(action)


@dataclass(frozen=True)
class Party:
    """Who, on which configured channel (`channel` is a configured name, not a network)."""

    channel: str
    user: str
    display: str = ""


@dataclass(frozen=True)
class Attachment:
    """A file in a message. `data` carries the bytes between an adapter and the blob store.

    Adapters fill `data` on receipt (or leave it empty and set `refused` when the file was
    not fetched, e.g. over the size limit); the hub stores the bytes as a blob and keeps only
    `sha256`. The outbox fills `data` again from the blob store before `Channel.send`.
    `integrity` names a problem with the bytes as received that does not stop them being kept
    (e.g. the network declared another SHA-256 for the file than the bytes downloaded have).
    """

    name: str
    mime: str
    size: int
    sha256: str = ""
    platform_ref: str = ""
    refused: str = ""
    data: bytes = field(default=b"", repr=False, compare=False)
    integrity: str = ""

    @staticmethod
    def of(name: str, mime: str, data: bytes, platform_ref: str = "") -> Attachment:
        """An attachment whose digest and size are computed from its bytes."""
        return Attachment(
            name=name,
            mime=mime,
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            platform_ref=platform_ref,
            data=data,
        )

    @property
    def ext(self) -> str:
        """Lower-case file extension without the dot ('' when there is none)."""
        base = self.name.rsplit("/", 1)[-1]
        return base.rsplit(".", 1)[-1].lower() if "." in base else ""

    def without_data(self) -> Attachment:
        return Attachment(self.name, self.mime, self.size, self.sha256, self.platform_ref, self.refused,
                          integrity=self.integrity)


@dataclass(frozen=True)
class Inbound:
    """One thing a channel received, in normalized form plus the raw wire payload.

    `chat` identifies the conversation on the channel: for a client-side channel the
    client's chat (the hub derives the conversation id from `(channel, chat)`); for a
    staff-side channel the relay conversation id the employee is answering (the adapter
    maps topics, JIDs or desk tabs to it). `reply_to` and `edits` are platform ids on this
    channel. Unknown content is kind `event` with `raw` kept, never dropped. `raw` is the
    payload exactly as received; `decrypted` is what the adapter decrypted it to, when the
    network encrypts its payloads (WeChat safe mode), journaled beside it. `notice`, on a
    client's `event`, is what the employee must be told about it (e.g. the client sent
    something the network cannot carry): the hub opens the conversation and sends it as a notice.
    """

    channel: str
    platform_id: str
    sender: Party
    chat: str
    kind: Kind = "message"
    text: str = ""
    attachments: tuple[Attachment, ...] = ()
    reply_to: str | None = None
    edits: str | None = None
    sent_at: float | None = None
    raw: bytes = field(default=b"", repr=False)
    decrypted: bytes = field(default=b"", repr=False)
    notice: str = ""


@dataclass(frozen=True)
class Span:
    """A half-open character range `[start, end)` in a message's text."""

    start: int
    end: int


@dataclass(frozen=True)
class RuleHit:
    """One rule that matched, with where it matched (spans may be empty, e.g. attachments)."""

    rule: str
    policy: str
    action: str
    severity: str = "medium"
    title: str = ""
    spans: tuple[Span, ...] = ()
    sampled: bool = False


@dataclass(frozen=True)
class Verdict:
    """The outcome of policy evaluation for one message.

    `review` is true when the message goes to the review queue (flag, quarantine, or a
    sampled match). `disclaimers` and `redactions` accumulate over all matched rules.
    """

    action: str = "allow"
    matched: tuple[RuleHit, ...] = ()
    disclaimers: tuple[str, ...] = ()
    redactions: tuple[Span, ...] = ()
    policy_version: str = ""
    review: bool = False

    @property
    def rules(self) -> tuple[str, ...]:
        return tuple(hit.rule for hit in self.matched)


OutKind = Literal["message", "edit", "delete", "notice"]


@dataclass(frozen=True)
class Outgoing:
    """What the outbox hands to `Channel.send`: already transformed (redacted, disclaimed).

    `message_id` is the relay's id of the message this delivers (stable across retries and
    restarts, so an adapter may use it for idempotency). `reply_to` and `edits` are platform
    ids on the target channel. `origin` is who wrote it (shown to employees), with the
    verdict summary in `action` and `rules`. `client` is the conversation's client, so a
    staff-side adapter can name a topic or contact after them. A notice about one message
    (held, rejected, blocked) has that message in `reply_to` and says what it is in `about`;
    a handover notice has `about` "handover" and the employee it came from in `handed_from`.
    """

    conversation: str
    to: Party
    text: str
    message_id: str
    kind: OutKind = "message"
    attachments: tuple[Attachment, ...] = ()
    reply_to: str | None = None
    edits: str | None = None
    origin: Party | None = None
    client: Party | None = None
    action: str = "allow"
    rules: tuple[str, ...] = ()
    about: str = ""
    handed_from: Party | None = None


@dataclass(frozen=True)
class Receipt:
    """What `deliver(inbound)` returns once the inbound is durably journaled."""

    message_id: str
    conversation: str
    duplicate: bool = False


HistoryState = Literal["delivered", "pending", "failed", "held", "rejected", "blocked"]


@dataclass(frozen=True)
class HistoryItem:
    """One message of a conversation as a staff desk shows it, read back from the journal.

    `text` and `attachments` are what its recipient received (redacted, with disclaimers);
    what policy held back is empty unless `mine` (the asking employee wrote it). `withheld`
    names why content is missing (erased, or under an erasure request); then text is empty.
    """

    id: str
    seq: int
    conversation: str
    direction: str
    sender: Party
    text: str
    ts: float
    platform_id: str
    action: str
    rules: tuple[str, ...]
    state: HistoryState
    mine: bool
    attachments: tuple[Attachment, ...] = ()
    edited: bool = False
    deleted: bool = False
    withheld: str = ""


@dataclass(frozen=True)
class HistoryPage:
    """Messages oldest first; `more` when older ones exist before `items[0]`."""

    items: tuple[HistoryItem, ...]
    more: bool


@dataclass(frozen=True)
class ConversationItem:
    """A conversation assigned to an employee; `last_seq` orders them, newest first."""

    id: str
    client: Party
    last_seq: int
    withheld: str = ""


class HistoryRefused(LookupError):
    """The asking employee may not read this conversation (not assigned to them, or unknown)."""


def conversation_id(channel: str, chat: str) -> str:
    """Deterministic conversation id for a client chat, stable across restarts."""
    digest = hashlib.sha256(f"{channel}\x00{chat}".encode()).hexdigest()[:16]
    return f"c-{digest}"

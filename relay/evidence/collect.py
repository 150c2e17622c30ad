"""Selecting the evidence: which journal events and messages an export or search covers.

Everything is read from the `events` table (the projections are derived and may lag or be
rebuilt), so an export shows exactly what the chain holds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, AsyncIterator, Iterable, Mapping, Protocol


class Reader(Protocol):
    """The read side of `relay.journal.Journal` that evidence code needs."""

    async def fetchall(self, sql: str, params: tuple = ()) -> list[Any]: ...

    async def get_blob(self, sha: str) -> bytes | None: ...


class FilterError(ValueError):
    """A filter value a user gave that cannot be understood; the message says which."""


def parse_time(value: str | None, *, end: bool = False) -> float | None:
    """ISO 8601 date or date-time (UTC when no zone) as epoch seconds; a bare date used as
    an upper bound covers that whole day."""
    if value is None or value == "":
        return None
    text = value.strip()
    try:
        if len(text) == 10:
            day = datetime.fromisoformat(text).replace(tzinfo=timezone.utc)
            return day.timestamp() + (86400 if end else 0)
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise FilterError(f"{value!r} is not a date (use YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS][+00:00])") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def iso(ts: float | None) -> str:
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class ExportFilter:
    """What to export: every given criterion must hold (none given: everything)."""

    conversation: str | None = None
    client: str | None = None
    employee: str | None = None
    since: float | None = None
    until: float | None = None
    rule: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class Ev:
    """One journal event as stored (body parsed)."""

    seq: int
    ts: float
    kind: str
    conversation: str | None
    body: dict[str, Any]
    prev_hash: str
    hash: str

    def as_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "ts": self.ts, "kind": self.kind, "conversation": self.conversation,
                "body": self.body, "prev_hash": self.prev_hash, "hash": self.hash}


def row_to_ev(row: Any) -> Ev:
    return Ev(int(row["seq"]), float(row["ts"]), row["kind"], row["conversation"],
              json.loads(row["body_json"]), row["prev_hash"], row["hash"])


EVENT_COLUMNS = "SELECT seq, ts, kind, conversation, body_json, prev_hash, hash FROM events"


async def event_chunks(reader: Reader, where: str = "", params: tuple[Any, ...] = (), since_seq: int = 0,
                       upto: int | None = None, chunk: int = 5000) -> AsyncIterator[list[Ev]]:
    """Events after `since_seq` (up to `upto`) matching `where` (SQL starting with " AND "), in
    seq order, `chunk` at a time. Keyset pagination: each query walks the primary key from where
    the previous one stopped, so no read transaction is held across chunks."""
    if upto is not None:
        where, params = " AND seq <= ?" + where, (upto, *params)
    last = since_seq
    while True:
        rows = await reader.fetchall(f"{EVENT_COLUMNS} WHERE seq > ?{where} ORDER BY seq LIMIT ?",
                                     (last, *params, chunk))
        if not rows:
            return
        last, full = int(rows[-1]["seq"]), len(rows) == chunk
        events = [row_to_ev(r) for r in rows]
        del rows  # the parsed events only, not the row text too, while the caller works
        yield events
        if not full:
            return


async def iter_events(reader: Reader, kinds: Iterable[str] | None = None, since_seq: int = 0,
                      batch: int = 5000) -> list[Ev]:
    """All events (optionally of some kinds) in seq order, fetched in batches."""
    kind_list = list(kinds) if kinds is not None else None
    where = "" if kind_list is None else " AND kind IN (" + ",".join("?" * len(kind_list)) + ")"
    out: list[Ev] = []
    async for events in event_chunks(reader, where, tuple(kind_list or ()), since_seq, chunk=batch):
        out.extend(events)
    return out


def client_key(party: dict[str, Any] | None) -> str:
    if not party:
        return ""
    return f"{party.get('channel', '')}:{party.get('user', '')}"


def is_restricted(seq: int, client: dict[str, Any] | None, restricted: Mapping[str, int]) -> bool:
    """Content journaled at `seq` for `client` is restricted when that client's erasure request
    (`restricted`: `channel:user` → seq of the request) came after it."""
    return seq < restricted.get(client_key(client), 0)


def client_matches(wanted: str, party: dict[str, Any] | None) -> bool:
    """`channel:user` matches exactly; a bare value matches the user id on any channel."""
    if not party:
        return False
    if ":" in wanted and client_key(party) == wanted:
        return True
    return str(party.get("user", "")) == wanted


@dataclass
class MessageRecord:
    """A message with everything the journal knows about it, for EML and HTML renderings."""

    id: str
    seq: int
    ts: float
    conversation: str
    body: dict[str, Any]
    verdict: dict[str, Any] | None = None
    shadow_verdicts: list[dict[str, Any]] = field(default_factory=list)
    decisions: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    deliveries: list[tuple[float, str, dict[str, Any]]] = field(default_factory=list)
    erased: dict[str, Any] | None = None
    restricted: bool = False

    @property
    def direction(self) -> str:
        return str(self.body.get("direction", ""))

    @property
    def kind(self) -> str:
        return str(self.body.get("kind", "message"))

    @property
    def text(self) -> str:
        return str(self.body.get("text") or "")

    @property
    def sender(self) -> dict[str, Any]:
        return self.body.get("sender") or {}

    @property
    def client(self) -> dict[str, Any]:
        return self.body.get("client") or {}

    @property
    def employee(self) -> str:
        return str(self.body.get("employee") or "")

    @property
    def attachments(self) -> list[dict[str, Any]]:
        return list(self.body.get("attachments") or [])

    @property
    def action(self) -> str:
        return str((self.verdict or {}).get("action", "")) or "unevaluated"

    @property
    def rules(self) -> list[str]:
        return [str(r.get("rule")) for r in (self.verdict or {}).get("rules", [])]


MESSAGE_REF_KINDS = ("policy.verdict", "policy.shadow_verdict", "delivery.queued", "message.delivered",
                     "delivery.failed", "review.decided")
"""Events about one message (their body names it in `message_id`)."""


def attach(rec: MessageRecord, ev: Ev) -> None:
    """Adds an event about `rec` (one of `MESSAGE_REF_KINDS`, in seq order): the last live
    verdict wins, shadow verdicts, decisions and deliveries accumulate."""
    if ev.kind in ("policy.verdict", "policy.shadow_verdict"):
        if ev.body.get("shadow") or ev.kind == "policy.shadow_verdict":
            rec.shadow_verdicts.append(ev.body)
        else:
            rec.verdict = ev.body
    elif ev.kind == "review.decided":
        rec.decisions.append((ev.ts, ev.body))
    elif ev.kind in ("delivery.queued", "message.delivered", "delivery.failed"):
        rec.deliveries.append((ev.ts, ev.kind, ev.body))


def message_matches(m: MessageRecord, flt: ExportFilter) -> bool:
    """Every criterion of `flt` holds for `m` (the rule one on its verdict, so once that is known)."""
    if flt.conversation and m.conversation != flt.conversation:
        return False
    if flt.client and not client_matches(flt.client, m.client):
        return False
    if flt.employee and m.employee != flt.employee and not (
            m.direction == "outbound" and str(m.sender.get("user")) == flt.employee):
        return False
    if flt.since is not None and m.ts < flt.since:
        return False
    if flt.until is not None and m.ts >= flt.until:
        return False
    if flt.rule and flt.rule not in m.rules:
        return False
    return True


async def candidate_conversations(reader: Reader, flt: ExportFilter) -> set[str] | None:
    """Conversations that can hold matching messages, from the projections (None: all), so a
    filtered export reads only their events."""
    found: set[str] | None = None

    def narrow(ids: Iterable[str]) -> None:
        nonlocal found
        ids = {i for i in ids if i}
        found = ids if found is None else found & ids

    if flt.conversation:
        narrow([flt.conversation])
    if flt.client:
        if ":" in flt.client:
            rows = await reader.fetchall("SELECT id FROM conversations WHERE client_channel || ':' || client_user = ?",
                                         (flt.client,))
        else:
            rows = await reader.fetchall("SELECT id FROM conversations WHERE client_user = ?", (flt.client,))
        narrow(r["id"] for r in rows)
    if flt.employee:
        rows = await reader.fetchall("SELECT DISTINCT conversation FROM messages WHERE employee = ?"
                                     " OR (direction = 'outbound' AND sender_user = ?)", (flt.employee, flt.employee))
        narrow(r["conversation"] for r in rows)
    if flt.rule:
        rows = await reader.fetchall(
            "SELECT DISTINCT m.conversation FROM messages m, json_each(COALESCE(m.rules_json, '[]')) r"
            " WHERE json_extract(r.value, '$.rule') = ?", (flt.rule,))
        narrow(r["conversation"] for r in rows)
    return found

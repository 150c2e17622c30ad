"""Legal holds and data-subject erasure requests: journal events whose state is derived from the chain.

`hold.added` / `hold.released` keep content from erasure; `erasure.requested` restricts a
client's content now (views withhold it) and lets it be erased when its retention ends.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from relay.compliance.retention import RetentionError
from relay.evidence.collect import Ev, Reader, client_matches, row_to_ev

HOLD_SCOPES = ("conversation", "client", "employee")


@dataclass(frozen=True)
class Hold:
    id: str
    scope: str
    value: str
    reason: str
    actor: str
    seq: int
    ts: float

    def covers(self, conversation: str, client: Mapping[str, Any] | None, employees: Iterable[str]) -> bool:
        if self.scope == "conversation":
            return conversation == self.value
        if self.scope == "client":
            return client_matches(self.value, client)
        return self.value in set(employees)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def active_holds(events: Iterable[Ev]) -> dict[str, Hold]:
    holds: dict[str, Hold] = {}
    for ev in events:
        if ev.kind == "hold.added":
            b = ev.body
            holds[str(b["hold_id"])] = Hold(str(b["hold_id"]), str(b["scope"]), str(b["value"]),
                                            str(b.get("reason", "")), str(b.get("actor", "")), ev.seq, ev.ts)
        elif ev.kind == "hold.released":
            holds.pop(str(ev.body.get("hold_id")), None)
    return holds


def restricted_clients(events: Iterable[Ev]) -> dict[str, int]:
    """`channel:user` → seq of the (latest) erasure request: content before it is restricted."""
    out: dict[str, int] = {}
    for ev in events:
        if ev.kind == "erasure.requested":
            out[str(ev.body["client"])] = ev.seq
    return out


async def load_state(reader: Reader) -> tuple[dict[str, Hold], dict[str, int]]:
    from relay.journal import lookups  # here: CLI help must not load the journal

    evs = [row_to_ev(r) for r in await reader.fetchall(lookups.COMPLIANCE_STATE_EVENTS)]
    return active_holds(evs), restricted_clients(evs)


def hold_event(scope: str, value: str, reason: str, actor: str) -> dict[str, Any]:
    if scope not in HOLD_SCOPES:
        raise RetentionError(f"a hold covers a conversation, a client or an employee, not {scope!r}")
    if not value:
        raise RetentionError(f"say which {scope} the hold covers")
    if not reason.strip():
        raise RetentionError("a legal hold needs a --reason (the matter it preserves evidence for)")
    return {"hold_id": "h-" + uuid.uuid4().hex[:12], "scope": scope, "value": value, "reason": reason, "actor": actor}


async def _known(journal: Any, scope: str, value: str) -> bool:
    if scope == "conversation":
        rows = await journal.fetchall("SELECT 1 FROM conversations WHERE id=? LIMIT 1", (value,))
    elif scope == "client":
        if ":" in value:
            rows = await journal.fetchall("SELECT 1 FROM conversations WHERE client_channel || ':' || client_user = ? LIMIT 1", (value,))
        else:
            rows = await journal.fetchall("SELECT 1 FROM conversations WHERE client_user = ? LIMIT 1", (value,))
    else:
        rows = await journal.fetchall("SELECT 1 FROM messages WHERE employee=? OR sender_user=? LIMIT 1", (value, value))
    return bool(rows)


async def add_hold(journal: Any, scope: str, value: str, reason: str, actor: str,
                   employees: Iterable[str] = ()) -> dict[str, Any]:
    body = hold_event(scope, value, reason, actor)
    if not (scope == "employee" and value in set(employees)) and not await _known(journal, scope, value):
        raise RetentionError(f"no {scope} {value!r} in the journal")
    ev = await journal.append("hold.added", body)
    return {**body, "seq": ev.seq}


async def release_hold(journal: Any, hold_id: str, reason: str, actor: str) -> dict[str, Any]:
    holds, _ = await load_state(journal)
    if hold_id not in holds:
        raise RetentionError(f"no active legal hold {hold_id!r} (see: relay hold list)")
    if not reason.strip():
        raise RetentionError("releasing a legal hold needs a --reason")
    ev = await journal.append("hold.released", {"hold_id": hold_id, "reason": reason, "actor": actor,
                                                "scope": holds[hold_id].scope, "value": holds[hold_id].value})
    return {"hold_id": hold_id, "released": True, "seq": ev.seq}


async def request_erasure(journal: Any, client: str, reason: str, actor: str) -> dict[str, Any]:
    """A data-subject request: the client's content is restricted now and erased when its
    retention ends (a regulated firm may not erase it earlier)."""
    if ":" not in client:
        rows = await journal.fetchall("SELECT DISTINCT client_channel FROM conversations WHERE client_user=?", (client,))
        if len(rows) != 1:
            raise RetentionError(f"say which channel: --client CHANNEL:{client}" if rows else f"no client {client!r} in the journal")
        client = f"{rows[0][0]}:{client}"
    if not await _known(journal, "client", client):
        raise RetentionError(f"no client {client!r} in the journal")
    if not reason.strip():
        raise RetentionError("an erasure request needs a --reason (e.g. the request reference)")
    body = {"request_id": "e-" + uuid.uuid4().hex[:12], "client": client, "reason": reason, "actor": actor}
    ev = await journal.append("erasure.requested", body)
    return {**body, "seq": ev.seq, "restricted": True}

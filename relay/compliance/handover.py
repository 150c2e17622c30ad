"""Handover: an employee leaves, the conversations stay with the company.

`handover` reassigns conversations (journaled `conversation.assigned` naming the actor), sends
the new employee the recent history in their own channel and the client the configured
handover notice. `deactivate` stops routing to an employee, closes the desk sessions they
still have open, and hands each of their conversations to another active member of the desk.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from relay.actions import AdminError
from relay.evidence.collect import client_key, is_restricted, iso
from relay.compliance.restricted import RESTRICTED_NOTE
from relay.compliance.holds import load_state
from relay.journal import lookups
from relay.model import Party
from relay.routing import RoutingError


HISTORY_DEFAULT = 20


class HandoverError(AdminError):
    """A handover that cannot be done as asked; the message says why."""


def history_size(app: Any) -> int:
    comp = app.config.raw.get("compliance") or {}
    return int((comp.get("handover") or {}).get("history", HISTORY_DEFAULT))


async def history_text(app: Any, conversation: str, previous: str | None, limit: int,
                       restricted: Mapping[str, int], intro: str = "") -> str:
    """The last `limit` messages of the conversation, oldest first, as plain text.

    Each message appears as it was delivered (redacted, with disclaimers); what policy held
    back (quarantined and not released, blocked) is named but not shown, so a handover never
    bypasses a verdict. Under a data-subject erasure request the messages before it (both
    directions, as search and export withhold them) and the client's display name are
    withheld: one line says how many, none of their text, senders' names or file names.
    """
    conv = await app.router.get(conversation)
    rows = await app.journal.fetchall(lookups.CONVERSATION_HISTORY, (conversation, limit))
    client = conv.client if conv else None
    party = {"channel": client.channel, "user": client.user} if client else None
    under_request = party is not None and client_key(party) in restricted
    if client is None:
        who = conversation
    elif under_request:
        who = f"{client.channel}:{client.user} [{RESTRICTED_NOTE}]"
    else:
        who = f"{client.display or client.user} ({client.channel}:{client.user})"
    head = ((intro.replace("{who}", who) if intro else f"Handover: conversation {conversation} with {who} is now yours"
             + (f" (from {previous})" if previous else "")) + f". Last {len(rows)} messages:")
    lines = [head]
    withheld = sum(1 for r in rows if is_restricted(int(r["seq"]), party, restricted))
    if withheld:
        lines.append(f"[{RESTRICTED_NOTE}] {withheld} earlier message(s) withheld")
    for r in reversed(rows):
        if is_restricted(int(r["seq"]), party, restricted):
            continue
        lines.append(f"{iso(r['ts'])} {r['direction']} {r['sender_display'] or r['sender_user']}: {_shown(r)}")
    return "\n".join(lines)


def _shown(r: Any) -> str:
    if r["erased"]:
        return "[erased]"
    if r["kind"] == "delete":
        return "[deleted a message]"
    out = json.loads(r["out_json"]) if r["out_json"] else None
    if out is None and r["action"] == "quarantine":
        return "[held for compliance review]"
    if out is None and r["action"] == "block":
        return "[blocked by policy]"
    if out is None and r["action"] == "redact":
        return "[redacted message]"
    body = str(out.get("text", "")) if out is not None else (r["text"] or "")
    files = [a.get("name") for a in json.loads(r["attachments_json"] or "[]") if isinstance(a, dict)]
    if files:
        body += f" [files: {', '.join(str(f) for f in files)}]"
    return "[edit] " + body if r["kind"] == "edit" else body


REOPENED_INTRO = "The topic of this conversation with {who} was deleted; it continues in this new one"


async def reopened_history(app: Any, channel: str, address: str, conversation: str) -> None:
    """A staff channel opened a conversation's lost topic anew (bots/telegram): the employee gets
    the recent history there, withheld and shown exactly as a handover's."""
    _, restricted = await load_state(app.journal)
    text = await history_text(app, conversation, None, history_size(app), restricted, intro=REOPENED_INTRO)
    seq = (app.journal.head or (0, ""))[0]
    await app.hub.notify(channel, address, text, conversation=conversation, key=f"reopened:{conversation}:{seq}")


async def reroute_pending(app: Any, conversation: str, previous: str | None, to: str) -> int:
    """Deliveries still waiting for the previous employee in this conversation go to the new one
    (the old ones are journaled as permanently failed, "rerouted", so a restart does not resume them)."""
    old = app.config.employees.get(previous) if previous else None
    if old is None:
        return 0
    rows = await app.journal.fetchall(lookups.QUEUED_IN_CONVERSATION, (conversation, old.channel))
    pending = [r for r in rows if (json.loads(r["to_json"] or "{}") or {}).get("user") == old.address]
    if not app.offline:
        taken = {d.delivery_id for d in app.outbox.withdraw(old.channel, old.address, conversation)}
        pending = [r for r in pending if r["delivery_id"] in taken]
    if not pending:
        return 0
    from relay.hub_records import delivery_id_for
    from relay.outbox import Delivery, party_json

    target = app.router.staff_party(to)
    events: list[tuple[str, dict[str, Any], str | None]] = []
    fresh: list[Delivery] = []
    for r in pending:
        out = json.loads(r["out_json"])
        did = delivery_id_for(r["message_id"], target.channel, target.user, str(out.get("kind", "message")))
        events.append(("delivery.failed", {"delivery_id": r["delivery_id"], "message_id": r["message_id"],
                                           "channel": old.channel, "reason": f"rerouted to {to}", "permanent": True,
                                           "attempt": 0}, conversation))
        events.append(("delivery.queued", {"delivery_id": did, "message_id": r["message_id"], "channel": target.channel,
                                           "to": party_json(target), "out": out}, conversation))
        fresh.append(Delivery(did, r["message_id"], conversation, target.channel, target, out))
    await app.journal.append_many(events)
    if not app.offline:
        for d in fresh:
            app.outbox.enqueue(d)
    return len(fresh)


async def _move(app: Any, conversation: str, to: str, actor: str, reason: str,
                restricted: Mapping[str, int]) -> dict[str, Any]:
    try:
        previous = await app.router.reassign(conversation, to, actor, reason)
    except RoutingError as exc:
        raise HandoverError(str(exc)) from exc
    rerouted = await reroute_pending(app, conversation, previous, to)
    if not app.offline:
        await app.conversation_handed_away(previous, conversation, to)
    emp = app.config.employees[to]
    seq = (app.journal.head or (0, ""))[0]
    text = await history_text(app, conversation, previous, history_size(app), restricted)
    old = app.config.employees.get(previous) if previous else None
    handed_from = Party(old.channel, old.id, old.name) if old is not None else Party("relay", "", "")
    await app.hub.notify(emp.channel, emp.address, text, conversation=conversation, key=f"handover:{conversation}:{seq}",
                         handed_from=handed_from)
    notice = app.config.notices["handover"]
    sent = await app.hub.send_system_message(conversation, notice, f"handover:{conversation}:{seq}")
    return {"conversation": conversation, "previous": previous, "employee": to, "rerouted": rerouted,
            "history_to": f"{emp.channel}:{emp.address}", "client_notice": bool(sent)}


async def handover(app: Any, employee: str, to: str, actor: str, conversation: str | None = None,
                   reason: str = "") -> dict[str, Any]:
    cfg = app.config
    if not actor:
        raise HandoverError("say who hands over: --as NAME")
    for who in (employee, to):
        if who not in cfg.employees:
            raise HandoverError(f"no employee named {who!r} (employees: {', '.join(sorted(cfg.employees))})")
    if employee == to:
        raise HandoverError("hand over to someone else (--to names the same employee)")
    if not app.router.is_active(to):
        raise HandoverError(f"employee {to!r} is not active")
    if conversation is not None:  # one conversation: one row, not the employee's whole history
        mine = [r["id"] for r in await app.journal.fetchall(lookups.CONVERSATION_OF_EMPLOYEE, (conversation, employee))]
    else:
        mine = await app.router.conversations_of(employee)
    if conversation is not None:
        if conversation not in mine:
            conv = await app.router.get(conversation)
            if conv is None:
                raise HandoverError(f"no conversation {conversation!r}")
            raise HandoverError(f"conversation {conversation} is assigned to {conv.employee}, not {employee}")
        mine = [conversation]
    why = reason or f"handover from {employee}"
    _, restricted = await load_state(app.journal)  # once: it reads the journal's erasure requests
    moved = [await _move(app, cid, to, actor, why, restricted) for cid in mine]
    return {"employee": employee, "to": to, "actor": actor, "moved": moved, "count": len(moved)}


async def set_active(app: Any, employee: str, active: bool, actor: str, reason: str = "") -> dict[str, Any]:
    cfg = app.config
    if not actor:
        raise HandoverError("say who does this: --as NAME")
    if employee not in cfg.employees:
        raise HandoverError(f"no employee named {employee!r}")
    await app.router.set_active(employee, active, actor)
    if active:
        return {"employee": employee, "active": True, "moved": []}
    closed = await app.end_staff_sessions(employee)
    moved: list[dict[str, Any]] = []
    waiting: list[str] = []
    _, restricted = await load_state(app.journal)
    for cid in await app.router.conversations_of(employee):
        conv = await app.router.get(cid)
        try:
            to = app.router.choose(conv.client.channel, exclude=employee) if conv else None
        except RoutingError:
            to = None
        if to is None:
            waiting.append(cid)
            continue
        moved.append(await _move(app, cid, to, actor, reason or f"{employee} deactivated", restricted))
    return {"employee": employee, "active": False, "moved": moved, "waiting_for_an_active_member": waiting,
            "desk_sockets_closed": closed}


async def handover_action(app: Any, params: dict[str, Any]) -> dict[str, Any]:
    return await handover(app, str(params.get("employee", "")), str(params.get("to", "")), str(params.get("actor", "")),
                          params.get("conversation") or None, str(params.get("reason") or ""))


async def deactivate_action(app: Any, params: dict[str, Any]) -> dict[str, Any]:
    return await set_active(app, str(params.get("employee", "")), False, str(params.get("actor", "")),
                            str(params.get("reason") or ""))


async def activate_action(app: Any, params: dict[str, Any]) -> dict[str, Any]:
    return await set_active(app, str(params.get("employee", "")), True, str(params.get("actor", "")))

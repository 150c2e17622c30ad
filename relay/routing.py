"""Conversations and who serves them: assignment, stickiness, handover, deactivation.

A client conversation belongs to the desk that serves its channel and is assigned to one
active member, round-robin, and stays with them until a handover. The state lives in the
journal (`conversation.assigned` events, `conversations` projection); this module keeps a
cache and decides.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable

from relay.config import Config, Employee
from relay.journal import Journal, lookups
from relay.model import Party

DEACTIVATED_NS = "employees.deactivated"


class RoutingError(ValueError):
    """A routing request that cannot be honoured (unknown employee, no active member…)."""


@dataclass
class Conversation:
    id: str
    client: Party
    employee: str | None
    has_outbound: bool = False
    desk: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Router:
    """Assigns conversations to employees and remembers the assignment."""

    def __init__(self, config: Config, journal: Journal) -> None:
        self.config = config
        self.journal = journal
        self._cache: dict[str, Conversation] = {}
        self._rr: dict[str, int] = {}
        self._deactivated: set[str] = set()
        self._lock = asyncio.Lock()
        self.on_change: Callable[[str], None] | None = None

    async def load(self) -> None:
        """Read deactivations and round-robin positions from the journal."""
        rows = await self.journal.fetchall("SELECT key, value FROM kv WHERE namespace = ?", (DEACTIVATED_NS,))
        self._deactivated = {r["key"] for r in rows if r["value"] == "1"}
        for desk in self.config.desks.values():
            ph = ",".join("?" * len(desk.clients))
            rows = await self.journal.fetchall(
                f"SELECT COUNT(*) AS n FROM conversations WHERE client_channel IN ({ph})", tuple(desk.clients)
            )
            self._rr[desk.name] = int(rows[0]["n"]) if rows else 0

    def is_active(self, employee_id: str) -> bool:
        emp = self.config.employees.get(employee_id)
        return emp is not None and emp.active and employee_id not in self._deactivated

    def employee(self, employee_id: str | None) -> Employee | None:
        return self.config.employees.get(employee_id) if employee_id else None

    def staff_party(self, employee_id: str) -> Party:
        emp = self.config.employees[employee_id]
        return Party(emp.channel, emp.address, emp.name)

    async def get(self, conversation: str) -> Conversation | None:
        conv = self._cache.get(conversation)
        if conv is not None:
            return conv
        rows = await self.journal.fetchall(lookups.CONVERSATION, (conversation,))
        if not rows:
            return None
        r = rows[0]
        desk = self.config.desk_for_channel(r["client_channel"])
        sent = await self.journal.fetchall(lookups.CONVERSATION_HAS_OUTBOUND, (r["id"], r["client_channel"]))
        conv = Conversation(
            id=r["id"],
            client=Party(r["client_channel"], r["client_user"], r["client_display"] or ""),
            employee=r["employee"],
            has_outbound=bool(sent),
            desk=desk.name if desk else None,
        )
        self._cache[conversation] = conv
        return conv

    def remember(self, conv: Conversation) -> None:
        self._cache[conv.id] = conv

    def forget(self, conversations: Iterable[str]) -> None:
        """Drop cached conversations whose row changed under the router (an erasure took the
        client's display name): the next `get` reads the projection, so no later assignment
        journals the erased name again."""
        for cid in conversations:
            self._cache.pop(cid, None)

    def choose(self, client_channel: str, exclude: str | None = None) -> str:
        """Next active member of the desk serving `client_channel`, round-robin."""
        desk = self.config.desk_for_channel(client_channel)
        if desk is None:
            raise RoutingError(f"no desk serves channel {client_channel!r}")
        members = [m for m in desk.members if self.is_active(m) and m != exclude]
        if not members:
            raise RoutingError(f"desk {desk.name!r} has no active member")
        n = self._rr.get(desk.name, 0)
        self._rr[desk.name] = n + 1
        return members[n % len(members)]

    def assignment_event(
        self, conv: Conversation, employee: str, previous: str | None, actor: str, reason: str
    ) -> tuple[str, dict[str, Any], str]:
        body = {
            "conversation": conv.id,
            "employee": employee,
            "previous": previous,
            "actor": actor,
            "reason": reason,
            "client": {"channel": conv.client.channel, "user": conv.client.user, "display": conv.client.display},
        }
        return ("conversation.assigned", body, conv.id)

    async def reassign(self, conversation: str, employee: str, actor: str, reason: str) -> str | None:
        """Move a conversation to `employee`; journals `conversation.assigned`; returns the previous one."""
        if employee not in self.config.employees:
            raise RoutingError(f"no employee named {employee!r}")
        if not self.is_active(employee):
            raise RoutingError(f"employee {employee!r} is not active")
        async with self._lock:
            conv = await self.get(conversation)
            if conv is None:
                raise RoutingError(f"no conversation {conversation!r}")
            previous = conv.employee
            kind, body, cid = self.assignment_event(conv, employee, previous, actor, reason)
            await self.journal.append(kind, body, conversation=cid)
            self._cache[conversation] = replace(conv, employee=employee)
            return previous

    async def set_active(self, employee: str, active: bool, actor: str) -> None:
        """Record (de)activation durably; callers reroute the employee's conversations."""
        if employee not in self.config.employees:
            raise RoutingError(f"no employee named {employee!r}")
        await self.journal.kv_put(DEACTIVATED_NS, employee, "0" if active else "1")
        await self.journal.append(
            "admin.action", {"actor": actor, "action": "employee.activate" if active else "employee.deactivate",
                             "args": {"employee": employee}}
        )
        if active:
            self._deactivated.discard(employee)
        else:
            self._deactivated.add(employee)
        if self.on_change is not None:
            self.on_change(employee)

    async def conversations_of(self, employee: str) -> list[str]:
        rows = await self.journal.fetchall(lookups.EMPLOYEE_CONVERSATIONS, (employee,))
        return [r["id"] for r in rows]

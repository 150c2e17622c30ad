"""The history a staff desk shows on login, read from the journal's projections (bots.base.History).

Each message appears as its recipient received it (the delivered, redacted text) with its verdict
and how far it got (delivered, pending, held, rejected, blocked); what policy held back is shown
only to the employee who wrote it. Content under a data-subject erasure request is withheld as
in search and export (relay.compliance.restricted), erased content is gone. Only the conversations
assigned to the asking employee are answered.
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Mapping

from relay.compliance.holds import restricted_clients
from relay.compliance.restricted import RESTRICTED_NOTE
from relay.evidence.collect import client_key, is_restricted
from relay.journal import Journal
from relay.journal.projections import rows_to_events
from relay.model import Attachment, ConversationItem, HistoryItem, HistoryPage, HistoryRefused, HistoryState, Party

MAX_LIMIT = 100
"""The most items one answer holds, whatever the caller asks for."""
ERASED = "erased"
_COLUMNS = ("m.id, m.seq, m.conversation, m.direction, m.channel, m.platform_id, m.sender_channel, m.sender_user,"
            " m.sender_display, m.text, m.attachments_json, m.ts, m.action, m.rules_json, m.employee, m.erased")
_SHOWN = "m.kind = 'message' AND NOT (m.direction = 'outbound' AND m.action IS NULL)"
"""Messages (not edits, deletes or network events), and not an employee's refused write (it has no verdict)."""


def _bounded(limit: int) -> int:
    return max(1, min(int(limit), MAX_LIMIT))


def _placeholders(values: Iterable[Any]) -> str:
    return ",".join("?" for _ in values)


def _rule_ids(rules_json: str | None) -> tuple[str, ...]:
    rules = json.loads(rules_json or "[]")
    return tuple(str(r.get("rule", "")) if isinstance(r, dict) else str(r) for r in rules if r)


def _attachments(items: Any) -> tuple[Attachment, ...]:
    if not isinstance(items, list):
        return ()
    return tuple(Attachment(str(a.get("name", "")), str(a.get("mime", "")), int(a.get("size") or 0),
                            str(a.get("sha256") or ""))
                 for a in items if isinstance(a, dict) and not a.get("refused"))


class JournalHistory:
    """`bots.base.History` over one journal; remembers the erasure requests it has read so far."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self._restricted: dict[str, int] = {}
        self._scanned = 0

    async def restricted(self) -> Mapping[str, int]:
        """`channel:user` → seq of the latest erasure request, reading only events not seen before."""
        head = self.journal.head[0]
        rows = await self.journal.fetchall(
            "SELECT seq, ts, kind, conversation, body_json, prev_hash, hash FROM events"
            " WHERE seq > ? AND kind = 'erasure.requested' ORDER BY seq", (self._scanned,))
        self._restricted.update(restricted_clients(rows_to_events(rows)))
        self._scanned = max([self._scanned, head] + [int(r["seq"]) for r in rows])
        return self._restricted

    async def conversations(self, employee: str, before: int | None,
                            limit: int) -> tuple[tuple[ConversationItem, ...], bool]:
        limit = _bounded(limit)
        rows = await self.journal.fetchall(
            "SELECT id, client_channel, client_user, client_display, last_seq FROM conversations"
            " WHERE employee = ? AND last_seq < ? ORDER BY last_seq DESC LIMIT ?",
            (employee, before if before is not None else 2**62, limit + 1))
        restricted = await self.restricted()
        out = []
        for r in rows[:limit]:
            party = {"channel": r["client_channel"] or "", "user": r["client_user"] or ""}
            hidden = client_key(party) in restricted
            client = Party(party["channel"], party["user"], "" if hidden else (r["client_display"] or ""))
            out.append(ConversationItem(r["id"], client, int(r["last_seq"] or 0), RESTRICTED_NOTE if hidden else ""))
        return tuple(out), len(rows) > limit

    async def _assigned(self, employee: str, conversation: str) -> dict[str, str]:
        rows = await self.journal.fetchall(
            "SELECT employee, client_channel, client_user FROM conversations WHERE id = ?", (conversation,))
        if not rows or rows[0]["employee"] != employee:
            raise HistoryRefused(f"conversation {conversation!r} is not assigned to you")
        return {"channel": rows[0]["client_channel"] or "", "user": rows[0]["client_user"] or ""}

    async def messages(self, employee: str, conversation: str, before: int | None, limit: int) -> HistoryPage:
        client = await self._assigned(employee, conversation)
        limit = _bounded(limit)
        rows = await self.journal.fetchall(
            f"SELECT {_COLUMNS} FROM messages m WHERE m.conversation = ? AND m.seq < ? AND {_SHOWN}"
            " ORDER BY m.seq DESC LIMIT ?",
            (conversation, before if before is not None else 2**62, limit + 1))
        items = await self._items(employee, client, list(reversed(rows[:limit])))
        return HistoryPage(tuple(items), len(rows) > limit)

    async def message(self, employee: str, message_id: str) -> HistoryItem | None:
        rows = await self.journal.fetchall(f"SELECT {_COLUMNS} FROM messages m WHERE m.id = ? AND {_SHOWN}",
                                           (message_id,))
        if not rows or rows[0]["conversation"] is None:
            return None
        try:
            client = await self._assigned(employee, rows[0]["conversation"])
        except HistoryRefused:
            return None
        items = await self._items(employee, client, rows)
        return items[0] if items else None

    async def attachment(self, employee: str, message_id: str, sha256: str) -> Attachment | None:
        item = await self.message(employee, message_id)
        found = next((a for a in item.attachments if a.sha256 == sha256), None) if item is not None else None
        if found is None:
            return None
        data = await self.journal.get_blob(sha256)
        return None if data is None else Attachment(found.name, found.mime, len(data), sha256, data=data)

    async def _items(self, employee: str, client: dict[str, str], rows: list[Any]) -> list[HistoryItem]:
        if not rows:
            return []
        ids = [r["id"] for r in rows]
        changes = await self.journal.fetchall(
            f"SELECT id, kind, edits FROM messages WHERE edits IN ({_placeholders(ids)})"
            " AND kind IN ('edit', 'delete') ORDER BY seq", ids)
        system = {r["id"] for r in rows if r["channel"] == "relay"}
        delivered = await self._deliveries(ids + [c["id"] for c in changes], system)
        reviews = {r["message_id"]: r["decision"] for r in await self.journal.fetchall(
            f"SELECT message_id, decision FROM review_queue WHERE message_id IN ({_placeholders(ids)})", ids)}
        edited: dict[str, str] = {}
        deleted: set[str] = set()
        for c in changes:
            out = delivered.get(c["id"])
            if out is None:
                continue  # an edit that policy held back, or not yet queued: the original stands
            if c["kind"] == "delete":
                deleted.add(c["edits"])
            else:
                edited[c["edits"]] = str(out[1].get("text", ""))
        restricted = await self.restricted()
        return [self._item(r, employee, client, delivered.get(r["id"]), reviews.get(r["id"]), edited, deleted,
                           restricted) for r in rows]

    async def _deliveries(self, ids: list[str], system: set[str]) -> dict[str, tuple[str, dict[str, Any]]]:
        """message id → (state, out) of its latest delivery; a notice about a message (blocked, held,
        rejected…) is not its delivery, but the relay's own messages (welcome…) travel as notices."""
        rows = await self.journal.fetchall(
            f"SELECT message_id, state, out_json FROM deliveries WHERE message_id IN ({_placeholders(ids)})"
            " ORDER BY seq", ids)
        out: dict[str, tuple[str, dict[str, Any]]] = {}
        for r in rows:
            body = json.loads(r["out_json"] or "{}") or {}
            if body.get("kind") != "notice" or r["message_id"] in system:
                out[r["message_id"]] = (str(r["state"]), body)
        return out

    def _item(self, r: Any, employee: str, client: dict[str, str], delivery: tuple[str, dict[str, Any]] | None,
              decision: str | None, edited: dict[str, str], deleted: set[str],
              restricted: Mapping[str, int]) -> HistoryItem:
        mine = r["direction"] == "outbound" and r["employee"] == employee and r["channel"] != "relay"
        action = r["action"] or ""
        state: HistoryState
        if delivery is not None:
            state = {"delivered": "delivered", "failed": "failed"}.get(delivery[0], "pending")
        elif action == "quarantine":
            state = "rejected" if decision == "reject" else "held"
        elif action == "block":
            state = "blocked"
        else:
            state = "pending"
        withheld = ERASED if r["erased"] else RESTRICTED_NOTE if is_restricted(int(r["seq"]), client, restricted) else ""
        text, files = "", ()
        if withheld:
            pass
        elif delivery is not None:
            text = edited.get(r["id"], str(delivery[1].get("text", "")))
            files = _attachments(delivery[1].get("attachments"))
        elif mine:
            text, files = r["text"] or "", _attachments(json.loads(r["attachments_json"] or "[]"))
        display = "" if withheld == RESTRICTED_NOTE and r["direction"] == "inbound" else (r["sender_display"] or "")
        return HistoryItem(
            id=r["id"], seq=int(r["seq"]), conversation=r["conversation"], direction=r["direction"] or "",
            sender=Party(r["sender_channel"] or "", r["sender_user"] or "", display), text=text, ts=float(r["ts"] or 0),
            platform_id=r["platform_id"] or "", action=action, rules=_rule_ids(r["rules_json"]), state=state,
            mine=mine, attachments=files, edited=r["id"] in edited and not withheld, deleted=r["id"] in deleted,
            withheld=withheld)

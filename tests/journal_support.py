"""Event bodies shaped as the hub writes them (docs/internals.md), for the journal tests."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from relay.journal import Journal

REPO = Path(__file__).resolve().parents[1]


def party(channel: str, user: str, display: str = "") -> dict[str, str]:
    return {"channel": channel, "user": user, "display": display or user.title()}


def received(
    mid: str,
    text: str = "hello",
    *,
    direction: str = "inbound",
    channel: str = "webchat",
    platform_id: str | None = None,
    kind: str = "message",
    edits: str | None = None,
    raw_sha256: str | None = None,
    attachments: list[dict[str, Any]] | None = None,
    sender: dict[str, str] | None = None,
    employee: str | None = None,
) -> dict[str, Any]:
    client = party("webchat", "client-1", "Client One")
    return {
        "id": mid,
        "direction": direction,
        "channel": channel,
        "platform_id": platform_id or f"p-{mid}",
        "chat": "chat-1",
        "kind": kind,
        "sender": sender or (client if direction == "inbound" else party("webdesk", employee or "alice")),
        "text": text,
        "attachments": attachments or [],
        "reply_to": None,
        "edits": edits,
        "sent_at": 1700000000.0,
        "raw_sha256": raw_sha256,
        "client": client,
        "employee": employee,
    }


def verdict(mid: str, action: str = "allow", review: bool = False, rules: list[str] = ()) -> dict[str, Any]:  # type: ignore[assignment]
    return {
        "message_id": mid,
        "action": action,
        "review": review,
        "rules": [
            {"rule": r, "policy": "fin", "action": action, "severity": "high", "title": r, "spans": [[0, 4]], "sampled": False}
            for r in rules
        ],
        "disclaimers": [],
        "redactions": [],
        "policy_version": "v1",
    }


def queued(did: str, mid: str, channel: str = "webdesk") -> dict[str, Any]:
    return {
        "delivery_id": did,
        "message_id": mid,
        "channel": channel,
        "to": party(channel, "alice"),
        "out": {"kind": "message", "text": "hello", "attachments": [], "reply_to": None, "edits": None,
                "origin": party("webchat", "client-1"), "client": party("webchat", "client-1"), "action": "allow", "rules": []},
    }


def rows(db_path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Direct look at the database file, outside the journal's own connections."""
    with sqlite3.connect(db_path) as db:
        return db.execute(sql, params).fetchall()


def tamper(db_path: Path, *statements: str) -> None:
    db = sqlite3.connect(db_path, isolation_level=None)
    try:
        for sql in statements:
            db.execute(sql)
    finally:
        db.close()


@pytest.fixture
async def jopen() -> AsyncIterator[Callable[..., Awaitable[Journal]]]:
    """`await jopen(dir, ...)` opens a Journal that is closed at teardown even if the test fails
    (aiosqlite's threads would otherwise keep the test process alive)."""
    opened: list[Journal] = []

    async def open_(*args: Any, **kwargs: Any) -> Journal:
        j = await Journal.open(*args, **kwargs)
        opened.append(j)
        return j

    yield open_
    for j in opened:
        await j.close()

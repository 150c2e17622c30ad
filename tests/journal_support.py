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


BACKENDS = ("sqlite", "postgresql")


class Store:
    """One journal's place on one backend: a data_dir, plus a database of its own on PostgreSQL.

    The journal tests take the `store` fixture (run once per backend) instead of a path, so the
    one suite checks both backends' contract; `rows` and `tamper` look past the journal's API.
    """

    def __init__(self, backend: str, data_dir: Path, url: str | None, opened: list[Any]) -> None:
        self.backend = backend
        self.data_dir = data_dir
        self.url = url
        self._opened = opened

    async def open_raw(self, **kwargs: Any) -> Any:
        from relay.journal.backend import open_journal

        return await open_journal(self.data_dir, url=self.url, **kwargs)

    async def open(self, **kwargs: Any) -> Any:
        """Opened and closed at teardown even if the test fails."""
        j = await self.open_raw(**kwargs)
        self._opened.append(j)
        return j

    async def other(self, name: str) -> Store:
        """A second, separate journal on the same backend."""
        url = None
        if self.url is not None:
            from tests.pg_support import new_database

            url = await new_database()
            self._opened.append(url)
        return Store(self.backend, self.data_dir.parent / name, url, self._opened)

    async def rows(self, sql_text: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if self.url is None:
            return rows(self.data_dir / "journal.sqlite3", sql_text, params)
        from relay.journal.pg import qmarks_to_dollars
        from tests.pg_support import sql

        return [tuple(r) for r in await sql(self.url, qmarks_to_dollars(sql_text), *params)]

    async def update_many(self, statement: str, args: list[tuple[Any, ...]]) -> None:
        if self.url is None:
            with sqlite3.connect(self.data_dir / "journal.sqlite3") as db:
                db.executemany(statement, args)
            return
        import asyncpg

        from relay.journal.pg import qmarks_to_dollars

        conn = await asyncpg.connect(self.url)
        try:
            await conn.executemany(qmarks_to_dollars(statement), args)
        finally:
            await conn.close()

    async def write_blob(self, sha: str, data: bytes) -> None:
        """Overwrites a stored blob's bytes (a forgery the verifier must catch)."""
        if self.url is None:
            (self.data_dir / "blobs" / sha[:2] / sha).write_bytes(data)
        else:
            await self.update_many("UPDATE blobs SET data=? WHERE sha256=?", [(data, sha)])

    async def delete_blob(self, sha: str) -> None:
        if self.url is None:
            (self.data_dir / "blobs" / sha[:2] / sha).unlink()
        else:
            await self.update_many("DELETE FROM blobs WHERE sha256=?", [(sha,)])

    async def tamper(self, *statements: str) -> None:
        if self.url is None:
            tamper(self.data_dir / "journal.sqlite3", *statements)
            return
        from tests.pg_support import sql

        for statement in statements:
            await sql(self.url, statement)


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    opened: list[Any] = []
    url = None
    if request.param == "postgresql":
        from tests.pg_support import new_database

        url = await new_database()
        opened.append(url)
    yield Store(request.param, tmp_path / "data", url, opened)
    for j in opened:
        if not isinstance(j, str):
            await j.close()
    if url is not None:
        from tests.pg_support import drop_database

        for db_url in opened:
            if isinstance(db_url, str):
                await drop_database(db_url)


async def journal_block(backend: str) -> tuple[dict[str, Any], str | None]:
    """The config's `journal:` block for a backend, and the URL to drop afterwards."""
    if backend == "sqlite":
        return {}, None
    from tests.pg_support import new_database

    url = await new_database()
    return {"url": url}, url

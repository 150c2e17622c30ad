"""The journal contract both backends keep (SQLite: `Journal`, PostgreSQL: `PgJournal`), and the
one place that picks a backend from the settings: no `journal.url` keeps the embedded SQLite."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from relay.journal.chain import Event
from relay.journal.journal import Journal
from relay.journal.opening import JournalError
from relay.journal.writer import JournalStats
from relay.journal.verify import VerifyReport

URL_SCHEMES = ("postgresql://", "postgres://")


class JournalBackend(Protocol):
    """What the hub and the commands may call; docs/internals.md ("Journal") gives the meaning."""

    data_dir: Path
    read_only: bool
    stats: JournalStats

    def append(self, kind: str, body: dict[str, Any], conversation: str | None = None) -> asyncio.Future[Event]: ...

    async def append_many(
        self, events: Sequence[tuple[str, dict[str, Any], str | None]], unless_message: str | None = None
    ) -> list[Event] | None: ...

    def submit_many(
        self, events: Sequence[tuple[str, dict[str, Any], str | None]], unless_message: str | None = None
    ) -> asyncio.Future[list[Event] | None]: ...

    async def kv_put(self, namespace: str, key: str, value: str | None) -> None: ...

    async def kv_get(self, namespace: str, key: str) -> str | None: ...

    async def checkpoint(self) -> None: ...

    async def rebuild(self) -> int: ...

    async def put_blob(self, data: bytes) -> str: ...

    async def get_blob(self, sha: str) -> bytes | None: ...

    async def fetchall(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]: ...

    @property
    def head(self) -> tuple[int, str]: ...

    async def verify(self, chunk: int = 2000) -> VerifyReport: ...

    def iter_events(
        self, where: str = "", params: tuple[Any, ...] = (), limit: int | None = None, chunk: int = 1000
    ) -> AsyncIterator[Event]: ...

    async def close(self) -> None: ...


def is_pg_url(url: str | None) -> bool:
    return bool(url) and str(url).startswith(URL_SCHEMES)


async def open_journal(data_dir: Path, *, url: str | None = None, **kwargs: Any) -> JournalBackend:
    """`url` set: the PostgreSQL journal (data_dir keeps this relay's key and checkpoint files);
    unset: the SQLite journal in data_dir. The keyword arguments are Journal.open's."""
    if url:
        if not is_pg_url(url):
            raise JournalError(f"journal.url must start with postgresql:// (got {url.split('://')[0]}://…)")
        from relay.journal.pg import PgJournal

        return await PgJournal.open(url, data_dir=data_dir, **kwargs)
    return await Journal.open(data_dir, **kwargs)

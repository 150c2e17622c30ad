"""Test doubles every channel's adapter-level tests share."""

from __future__ import annotations


class MemoryState:
    """A StateStore kept in a dict (the real one lives in the journal database)."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}

    async def get(self, key: str) -> str | None:
        return self.data.get(key)

    async def put(self, key: str, value: str) -> None:
        self.data[key] = value

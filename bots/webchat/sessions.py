"""Desk login sessions: random tokens held server-side, so logout and restart end them for sure."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

SESSION_SECONDS = 12 * 3600.0


@dataclass(frozen=True)
class Session:
    token: str
    employee: str
    expires: float


class Sessions:
    """token → employee address, in memory (a restart logs everyone out, by design)."""

    def __init__(self, lifetime: float = SESSION_SECONDS) -> None:
        self.lifetime = lifetime
        self._by_token: dict[str, Session] = {}

    def open(self, employee: str) -> Session:
        self._expire()
        session = Session(secrets.token_urlsafe(32), employee, time.time() + self.lifetime)
        self._by_token[session.token] = session
        return session

    def get(self, token: str | None) -> Session | None:
        if not token:
            return None
        session = self._by_token.get(token)
        if session is None or session.expires < time.time():
            self._by_token.pop(token, None)
            return None
        return session

    def has_employee(self, employee: str) -> bool:
        now = time.time()
        return any(s.employee == employee and s.expires >= now for s in self._by_token.values())

    def close(self, token: str | None) -> Session | None:
        return self._by_token.pop(token, None) if token else None

    def close_employee(self, employee: str) -> int:
        """End every session of `employee` (deactivated: none comes back on reactivation)."""
        tokens = [t for t, s in self._by_token.items() if s.employee == employee]
        for token in tokens:
            del self._by_token[token]
        return len(tokens)

    def _expire(self) -> None:
        now = time.time()
        for token in [t for t, s in self._by_token.items() if s.expires < now]:
            del self._by_token[token]

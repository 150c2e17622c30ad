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


class LoginThrottle:
    """Slows password guessing: after `limit` failures for one (employee, address) within
    `window` seconds, further attempts from there are refused until the window passes.

    Keyed by the pair, so a guesser elsewhere cannot lock the employee out.
    """

    def __init__(self, limit: int = 5, window: float = 300.0) -> None:
        self.limit = limit
        self.window = window
        self._failures: dict[tuple[str, str], list[float]] = {}

    def _recent(self, key: tuple[str, str]) -> list[float]:
        cutoff = time.time() - self.window
        recent = [t for t in self._failures.get(key, ()) if t > cutoff]
        if recent:
            self._failures[key] = recent
        else:
            self._failures.pop(key, None)
        return recent

    def retry_after(self, employee: str, address: str) -> float:
        """Seconds until another attempt is allowed (0 when allowed now)."""
        recent = self._recent((employee, address))
        if len(recent) < self.limit:
            return 0.0
        return max(0.0, recent[-self.limit] + self.window - time.time())

    def failed(self, employee: str, address: str) -> None:
        self._recent((employee, address))
        self._failures.setdefault((employee, address), []).append(time.time())

    def succeeded(self, employee: str, address: str) -> None:
        self._failures.pop((employee, address), None)

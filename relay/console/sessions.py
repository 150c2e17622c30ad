"""Console logins held server-side: a random session token in an HttpOnly cookie, and per
session a CSRF token every form carries back, so a logout or restart ends a login for sure."""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass

SESSION_SECONDS = 8 * 3600.0
MAX_SESSIONS = 10_000


@dataclass(frozen=True)
class Session:
    token: str
    reviewer: str
    csrf: str
    expires: float

    def csrf_ok(self, sent: str | None) -> bool:
        return bool(sent) and hmac.compare_digest(str(sent).encode(), self.csrf.encode())


class Sessions:
    """token → reviewer, in memory; bounded (the oldest login goes first)."""

    def __init__(self, lifetime: float = SESSION_SECONDS) -> None:
        self.lifetime = lifetime
        self._by_token: dict[str, Session] = {}

    def open(self, reviewer: str) -> Session:
        now = time.time()
        for token in [t for t, s in self._by_token.items() if s.expires < now]:
            del self._by_token[token]
        while len(self._by_token) >= MAX_SESSIONS:
            self._by_token.pop(next(iter(self._by_token)))
        session = Session(secrets.token_urlsafe(32), reviewer, secrets.token_urlsafe(32), now + self.lifetime)
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

    def close(self, token: str | None) -> Session | None:
        return self._by_token.pop(token, None) if token else None

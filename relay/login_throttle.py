"""Password-guessing brakes shared by the web desk and the compliance console.

Failures are counted per (account, client address), so a guesser slows only themselves: after
`limit` failures that pair waits `base_delay` (30 s), twice as long after each further failure
(capped at `max_delay`). An account
guessed at from many addresses gets a per-account cap: every address then waits `account_delay`
before its first attempt, so the right password from a new address still gets through after that
delay, while the guesses as a whole slow down. Behind a reverse proxy the client address comes
from X-Forwarded-For, but only when the peer is one of the configured `trusted_proxies`.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterable
from typing import Any, Callable

MAX_KEYS = 100_000
"""Entries kept at most (oldest dropped first), so a flood of made-up names cannot grow memory."""

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_proxies(values: Iterable[str] | None) -> tuple[Network, ...]:
    """`trusted_proxies: ["10.0.0.0/8", "127.0.0.1"]` as networks; raises ValueError naming a bad entry."""
    out: list[Network] = []
    for value in values or ():
        try:
            out.append(ipaddress.ip_network(str(value).strip(), strict=False))
        except ValueError as exc:
            raise ValueError(f"web.trusted_proxies: {value!r} is not an IP address or network (e.g. 10.0.0.0/8)") from exc
    return tuple(out)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None


def client_address(peer: str | None, forwarded_for: str | None, trusted: tuple[Network, ...]) -> str:
    """The client's address: the peer, unless the peer is a trusted proxy; then the right-most
    X-Forwarded-For entry that is not itself a trusted proxy (entries left of it are client-made)."""
    address = peer or ""
    if not trusted or not forwarded_for:
        return address
    ip = _ip(address)
    if ip is None or not any(ip in net for net in trusted):
        return address
    for hop in reversed(forwarded_for[:4096].split(",")):
        hop_ip = _ip(hop)
        if hop_ip is None:
            return address  # a malformed hop: do not trust anything left of it
        if not any(hop_ip in net for net in trusted):
            return str(hop_ip)
    return address


def request_address(request: Any, trusted: tuple[Network, ...]) -> str:
    """`client_address` for an aiohttp request."""
    return client_address(request.remote, request.headers.get("X-Forwarded-For"), trusted)


class LoginThrottle:
    """Per (account, address) backoff plus a per-account cap; memory bounded by `MAX_KEYS`."""

    def __init__(self, limit: int = 5, window: float = 900.0, base_delay: float = 30.0, max_delay: float = 300.0,
                 account_limit: int = 20, account_delay: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window = window
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.account_limit = account_limit
        self.account_delay = account_delay
        self.clock = clock
        self._pairs: dict[tuple[str, str], list[float]] = {}
        self._accounts: dict[str, list[float]] = {}
        self._first_seen: dict[tuple[str, str], float] = {}

    def _recent(self, table: dict[Any, list[float]], key: Any, now: float) -> list[float]:
        times = [t for t in table.get(key, ()) if t > now - self.window]
        if times:
            table[key] = times
        else:
            table.pop(key, None)
        return times

    def retry_after(self, account: str, address: str) -> float:
        """Seconds until this pair may try again (0: now). Asking counts as the pair's first
        contact while the account is capped, so waiting `account_delay` and asking again works."""
        now = self.clock()
        pair = (account, address)
        wait = 0.0
        failures = self._recent(self._pairs, pair, now)
        if len(failures) >= self.limit:
            delay = min(self.max_delay, self.base_delay * 2 ** (len(failures) - self.limit))
            wait = max(wait, failures[-1] + delay - now)
        if len(self._recent(self._accounts, account, now)) >= self.account_limit:
            first = self._first_seen.get(pair)
            if first is None or first < now - self.window:
                self._bounded(self._first_seen)
                self._first_seen[pair] = first = now
            wait = max(wait, first + self.account_delay - now)
        return max(0.0, wait)

    def failed(self, account: str, address: str) -> None:
        now = self.clock()
        self._bounded(self._pairs)
        self._bounded(self._accounts)
        self._recent(self._pairs, (account, address), now)
        self._pairs.setdefault((account, address), []).append(now)
        self._recent(self._accounts, account, now)
        self._accounts.setdefault(account, []).append(now)

    def succeeded(self, account: str, address: str) -> None:
        """The right password: that pair starts afresh (the account's cap stays for the others)."""
        self._pairs.pop((account, address), None)

    @staticmethod
    def _bounded(table: dict[Any, Any]) -> None:
        while len(table) >= MAX_KEYS:
            table.pop(next(iter(table)))

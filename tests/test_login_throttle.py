"""The shared login throttle: backoff per (account, address), a per-account cap that a new
address passes after a delay, and X-Forwarded-For only from trusted proxies."""

from __future__ import annotations

import pytest

from relay.login_throttle import LoginThrottle, client_address, parse_proxies


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_backoff_doubles_per_pair_and_leaves_other_addresses_alone() -> None:
    clock = Clock()
    t = LoginThrottle(limit=3, base_delay=2.0, max_delay=60.0, account_limit=100, clock=clock)
    for _ in range(3):
        assert t.retry_after("carol", "a") == 0
        t.failed("carol", "a")
    assert t.retry_after("carol", "a") == pytest.approx(2.0)
    assert t.retry_after("carol", "b") == 0
    clock.now += 2.0
    t.failed("carol", "a")
    assert t.retry_after("carol", "a") == pytest.approx(4.0)
    for _ in range(10):
        t.failed("carol", "a")
    assert t.retry_after("carol", "a") == pytest.approx(60.0)
    t.succeeded("carol", "a")
    assert t.retry_after("carol", "a") == 0


def test_account_cap_lets_a_new_address_in_after_the_delay() -> None:
    clock = Clock()
    t = LoginThrottle(limit=3, account_limit=6, account_delay=30.0, clock=clock)
    for address in ("x1", "x2", "x3"):
        for _ in range(2):
            t.failed("carol", address)
    assert t.retry_after("carol", "home") == pytest.approx(30.0)
    clock.now += 10
    assert t.retry_after("carol", "home") == pytest.approx(20.0)
    clock.now += 20
    assert t.retry_after("carol", "home") == 0
    assert t.retry_after("dave", "home") == 0


def test_forwarded_for_only_from_trusted_proxies() -> None:
    trusted = parse_proxies(["10.0.0.0/8", "::1"])
    assert client_address("10.1.2.3", "203.0.113.5", trusted) == "203.0.113.5"
    assert client_address("198.51.100.1", "203.0.113.5", trusted) == "198.51.100.1"
    assert client_address("10.1.2.3", "1.2.3.4, 203.0.113.5, 10.9.9.9", trusted) == "203.0.113.5"
    assert client_address("10.1.2.3", "203.0.113.5, garbage", trusted) == "10.1.2.3"
    assert client_address("10.1.2.3", "203.0.113.5", ()) == "10.1.2.3"
    with pytest.raises(ValueError, match="trusted_proxies: 'nope'"):
        parse_proxies(["nope"])

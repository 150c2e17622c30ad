"""A relay with the compliance console and reviewers who can log in, and an HTTP client that
logs in as a browser does (login form token, session cookie, CSRF token from the page)."""

from __future__ import annotations

import re
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp

from relay.app import RelayApp
from tests.compliance_support import TEST_POLICY, write_policies
from tests.webchat_support import password_hash

PASSWORDS = {"carol": "carol-pw", "dave": "dave-pw", "erin": "erin-pw"}
ROLES = {"carol": "reviewer", "dave": "supervisor", "erin": "admin"}


def console_config(data_dir: Path, policies: Path | None = None, **extra: Any) -> dict[str, Any]:
    """Memory channels on both sides (the outbox delivers at once), reviewers of each role with
    passwords, the test policy (Q-001 quarantines "insider", F-001 flags "guaranteed")."""
    if policies is None:
        policies = write_policies(data_dir.parent / "policies", TEST_POLICY)
    cfg: dict[str, Any] = {
        "data_dir": str(data_dir),
        "listen": {"host": "127.0.0.1", "port": 0},
        "policies": {"dir": str(policies), "reload_seconds": 0.2},
        "journal": {"checkpoint_seconds": 3600},
        "outbox": {"base_delay": 0.02, "max_delay": 0.2},
        "channels": {"clients": {"network": "memory", "side": "client"},
                     "staff": {"network": "memory", "side": "staff"}},
        "employees": {n: {"name": n.title(), "staff": {"channel": "staff", "address": n}, "groups": ["advisors"]}
                      for n in ("ann", "ben")},
        "desks": {"desk": {"clients": ["clients"], "members": ["ann", "ben"]}},
        "reviewers": {n: {"role": ROLES[n], "name": n.title(), "password_hash": password_hash(PASSWORDS[n])}
                      for n in PASSWORDS},
        "compliance": {"sla": {"quarantine": "24h", "flag": "72h"}, "sweep": "1h"},
    }
    cfg.update(extra)
    return cfg


@asynccontextmanager
async def running(cfg: dict[str, Any]) -> AsyncIterator[RelayApp]:
    relay = await RelayApp.start(cfg)
    try:
        yield relay
    finally:
        await relay.stop()


_counter = [0]


async def client_says(relay: RelayApp, user: str, text: str) -> str:
    """A client message on the memory channel, through the production hub; returns its id."""
    _counter[0] += 1
    receipt = await relay.channels["clients"].inject(user, text, f"{user}-{_counter[0]}", display=user.title())
    return receipt.message_id


CSRF = re.compile(r"<meta name='csrf-token' content='([^']*)'>")
LOGIN_TOKEN = re.compile(r"name='login_token' value='([^']*)'")


def csrf_of(html: str) -> str:
    m = CSRF.search(html)
    assert m, "no CSRF token on the page"
    return m.group(1)


async def login(base: str, who: str, password: str | None = None,
                headers: dict[str, str] | None = None) -> tuple[aiohttp.ClientSession, int, str]:
    """A session logged in as `who` (status 303 on success), with the page's CSRF token."""
    s = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    async with s.get(base + "/console/login") as r:
        token = LOGIN_TOKEN.search(await r.text()).group(1)
    async with s.post(base + "/console/login", data={"reviewer": who, "password": password or PASSWORDS[who],
                                                     "login_token": token}, allow_redirects=False,
                      headers=headers or {}) as r:
        status = r.status
    csrf = ""
    if status == 303:
        async with s.get(base + "/console/queue") as r:
            csrf = csrf_of(await r.text())
    return s, status, csrf

"""The desk's login throttle behind a reverse proxy: with `web.trusted_proxies`, a guesser
behind the same proxy as the employee cannot lock the employee out."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from tests.e2e_support import running, web_config


async def _login(s: aiohttp.ClientSession, base: str, password: str, client: str) -> int:
    async with s.post(base + "/desk/login", data={"employee": "alice", "password": password},
                      headers={"X-Forwarded-For": client}) as r:
        return r.status


async def test_desk_throttle_keys_on_the_forwarded_client(tmp_path: Path) -> None:
    cfg = web_config(tmp_path / "data", web={"trusted_proxies": ["127.0.0.0/8"]})
    async with running(cfg) as relay, aiohttp.ClientSession() as s:
        base = relay.base_url
        for _ in range(5):
            assert await _login(s, base, "guess", "203.0.113.66") == 401
        assert await _login(s, base, "alice-pw", "203.0.113.66") == 429
        assert await _login(s, base, "alice-pw", "198.51.100.20") == 200


async def test_without_trusted_proxies_the_header_is_ignored(tmp_path: Path) -> None:
    async with running(web_config(tmp_path / "data")) as relay, aiohttp.ClientSession() as s:
        base = relay.base_url
        for _ in range(5):
            assert await _login(s, base, "guess", "203.0.113.66") == 401
        assert await _login(s, base, "alice-pw", "198.51.100.20") == 429

"""The console over plain HTTP: logins, sessions, the throttle, CSRF, roles, queue and item."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from tests.console_support import client_says, console_config, csrf_of, login, running


async def test_login_session_csrf_and_roles(tmp_path: Path) -> None:
    async with running(console_config(tmp_path / "data")) as relay:
        base = relay.base_url
        mid = await client_says(relay, "vera", "an insider said buy now")
        async with aiohttp.ClientSession() as anon:
            async with anon.get(base + "/console/queue") as r:
                assert r.status == 401 and "Log in first" in await r.text()
            async with anon.post(base + "/console/item/" + mid + "/decide", data={"decision": "reject"}) as r:
                assert r.status == 401
            async with anon.get(base + "/console/queue/events") as r:
                assert r.status == 401
        s, status, _ = await login(base, "carol", "wrong")
        assert status == 401
        await s.close()
        carol, status, csrf = await login(base, "carol")
        try:
            assert status == 303
            cookie = next(c for c in carol.cookie_jar if c.key == "relay_console")
            assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/console"
            async with carol.get(base + "/console/queue") as r:
                html = await r.text()
                assert r.status == 200 and mid in html and "Q-001" in html
            async with carol.post(base + f"/console/item/{mid}/decide",
                                  data={"decision": "reject", "reason": "insider", "csrf": "forged"}) as r:
                assert r.status == 403 and "CSRF" in await r.text()
            assert not await relay.journal.fetchall("SELECT 1 FROM events WHERE kind = 'review.decided'")
            async with carol.post(base + f"/console/item/{mid}/decide", data={"decision": "reject", "csrf": csrf}) as r:
                assert r.status == 400 and "needs a --reason" in await r.text()
            async with carol.post(base + f"/console/item/{mid}/decide",
                                  data={"decision": "reject", "reason": "insider tip", "reviewer": "erin", "csrf": csrf},
                                  allow_redirects=False) as r:
                assert r.status == 303
            rows = await relay.journal.fetchall("SELECT body_json FROM events WHERE kind = 'review.decided'")
            assert len(rows) == 1 and '"reviewer":"carol"' in rows[0]["body_json"]
            async with carol.post(base + "/console/logout", data={"csrf": csrf}, allow_redirects=False) as r:
                assert r.status == 303
            async with carol.get(base + "/console/queue") as r:
                assert r.status == 401
        finally:
            await carol.close()


async def test_throttle_per_account_and_address_honours_trusted_proxies(tmp_path: Path) -> None:
    cfg = console_config(tmp_path / "data", web={"trusted_proxies": ["127.0.0.1/32"]})
    async with running(cfg) as relay:
        base = relay.base_url
        guesser = {"X-Forwarded-For": "203.0.113.9"}
        for _ in range(5):
            s, status, _ = await login(base, "carol", "guess", headers=guesser)
            await s.close()
            assert status == 401
        s, status, _ = await login(base, "carol", headers=guesser)
        await s.close()
        assert status == 429
        # the same account from another client behind the same proxy is not locked out
        s, status, _ = await login(base, "carol", headers={"X-Forwarded-For": "198.51.100.7"})
        await s.close()
        assert status == 303
        # a forged hop left of the real client does not change who the proxy saw
        s, status, _ = await login(base, "carol", headers={"X-Forwarded-For": "198.51.100.7, 203.0.113.9"})
        await s.close()
        assert status == 429

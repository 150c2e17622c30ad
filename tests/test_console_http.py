"""The console over plain HTTP: logins, sessions, the throttle, CSRF, roles, queue and item."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from tests.console_support import client_says, console_config, login, running


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


async def test_every_page_answers_and_holds_need_a_supervisor(tmp_path: Path) -> None:
    async with running(console_config(tmp_path / "data")) as relay:
        base = relay.base_url
        held = await client_says(relay, "vera", "an insider said buy now")
        flagged = await client_says(relay, "walt", "a guaranteed profit for you")
        carol, _, csrf = await login(base, "carol")
        dave, _, dcsrf = await login(base, "dave")
        try:
            async with carol.get(base + "/console/queue", params={"rule": "F-001"}) as r:
                html = await r.text()
                assert flagged in html and held not in html and "1 item(s)" in html
            async with carol.get(base + "/console/queue", params={"desk": "desk", "channel": "clients", "sort": "due"}) as r:
                html = await r.text()
                assert flagged in html and held in html and html.index(held) < html.index(flagged)  # 24h before 72h
            async with carol.get(base + "/console/queue", params={"desk": "nope"}) as r:
                assert r.status == 400 and "no desk &#x27;nope&#x27; (desks: desk)" in await r.text()
            async with carol.get(base + "/console/queue", params={"older": "soon"}) as r:
                assert r.status == 400 and "older than" in await r.text()
            for _ in range(600):  # the outbox delivers the flagged message in the background
                if await relay.journal.fetchall("SELECT 1 FROM deliveries WHERE message_id = ? AND state = 'delivered'",
                                                (flagged,)):
                    break
                await asyncio.sleep(0.05)
            async with carol.get(base + f"/console/item/{flagged}") as r:
                html = await r.text()
                assert "<mark title='F-001'>guaranteed</mark>" in html and "Promissory language" in html
                assert "What each recipient received" in html and "delivered" in html
            conv = (await relay.journal.fetchall("SELECT conversation FROM messages WHERE id = ?", (flagged,)))[0][0]
            async with carol.get(base + f"/console/conversation/{conv}") as r:
                html = await r.text()
                assert r.status == 200 and "<mark title='F-001'>guaranteed</mark> profit for you" in html and "v-flag" in html
            async with carol.get(base + "/console/search", params={"q": "guaranteed"}) as r:
                html = await r.text()
                assert "1 result(s)" in html and "<mark>guaranteed</mark>" in html and f"/console/conversation/{conv}#m" in html
            async with carol.get(base + "/console/dashboard") as r:
                html = await r.text()
                assert "<svg" in html and "F-001" in html and "Q-001" in html
            async with carol.get(base + "/console/policies") as r:
                html = await r.text()
                assert relay.policies.version in html and "2 of 2 rule test(s) pass" in html
            async with carol.get(base + "/console/holds") as r:
                assert r.status == 403 and "needs a supervisor" in await r.text()
            async with carol.post(base + "/console/holds/add", data={"scope": "conversation", "value": conv,
                                                                      "reason": "matter 1", "csrf": csrf}) as r:
                assert r.status == 403 and "carol has role reviewer" in await r.text()
            async with dave.post(base + "/console/holds/add", data={"scope": "conversation", "value": conv,
                                                                     "reason": "matter 1", "csrf": dcsrf}) as r:
                html = await r.text()
                assert r.status == 200 and "Legal hold added" in html and "matter 1" in html
            rows = await relay.journal.fetchall("SELECT body_json FROM events WHERE kind = 'hold.added'")
            assert len(rows) == 1 and '"actor":"dave"' in rows[0]["body_json"]
            async with dave.post(base + "/console/erasure/request", data={"client": "clients:vera", "reason": "DSR-7",
                                                                           "csrf": dcsrf}) as r:
                assert "Erasure request recorded" in await r.text()
            async with carol.get(base + f"/console/item/{held}") as r:
                html = await r.text()
                assert "said buy now" not in html and "Content withheld" in html
            async with carol.get(base + "/console/queue") as r:
                html = await r.text()
                assert "said buy now" not in html and "withheld: data-subject erasure request" in html
        finally:
            await carol.close()
            await dave.close()


async def test_admin_reveal_is_journaled(tmp_path: Path) -> None:
    async with running(console_config(tmp_path / "data")) as relay:
        base = relay.base_url
        held = await client_says(relay, "vera", "an insider said buy now")
        erin, _, csrf = await login(base, "erin")
        try:
            async with erin.post(base + "/console/erasure/request", data={"client": "clients:vera", "reason": "DSR-8",
                                                                           "csrf": csrf}) as r:
                assert r.status == 200
            async with erin.get(base + f"/console/item/{held}") as r:
                assert "said buy now" not in await r.text()
            async with erin.post(base + f"/console/item/{held}/reveal", data={"reason": "regulator asked", "csrf": csrf}) as r:
                assert "said buy now" in await r.text()
            rows = await relay.journal.fetchall("SELECT body_json FROM events WHERE kind = 'admin.action'"
                                                " AND body_json LIKE '%console.reveal_restricted%'")
            assert len(rows) == 1 and '"actor":"erin"' in rows[0]["body_json"] and held in rows[0]["body_json"]
        finally:
            await erin.close()


async def test_sla_filter_escalation_refusal_and_policy_reload_errors(tmp_path: Path) -> None:

    cfg = console_config(tmp_path / "data")
    cfg["compliance"]["sla"]["flag"] = "1s"
    policies = Path(cfg["policies"]["dir"])
    async with running(cfg) as relay:
        base = relay.base_url
        late = await client_says(relay, "walt", "a guaranteed profit for you")
        carol, _, csrf = await login(base, "carol")
        dave, _, dcsrf = await login(base, "dave")
        try:
            await asyncio.sleep(1.2)
            fresh = await client_says(relay, "xena", "an insider said so")  # quarantine: its SLA is 24h
            async with carol.get(base + "/console/queue", params={"breached": "1"}) as r:
                html = await r.text()
                assert late in html and fresh not in html and "SLA breached" in html
            async with dave.post(base + f"/console/item/{late}/decide", data={"decision": "escalate", "reason": "odd",
                                                                              "csrf": dcsrf}) as r:
                assert r.status == 200
            async with carol.post(base + f"/console/item/{late}/decide", data={"decision": "compliant", "csrf": csrf}) as r:
                assert r.status == 403 and "escalated to supervisors" in await r.text()
            async with carol.get(base + "/console/queue", params={"state": "escalated"}) as r:
                html = await r.text()
                assert late in html and fresh not in html

            (policies / "test.yaml").write_text((policies / "test.yaml").read_text() + "  - id: BROKEN\n    match: [\n")
            for _ in range(600):  # the watcher keeps the errors, then journals them
                if relay.watcher.last_errors and await relay.journal.fetchall(
                        "SELECT 1 FROM events WHERE kind = 'admin.action' AND body_json LIKE '%policy.reload_failed%'"):
                    break
                await asyncio.sleep(0.05)
            async with carol.get(base + "/console/policies") as r:
                html = await r.text()
                assert "was rejected" in html and "test.yaml:" in html
                assert "id='last-reload'" in html and "id='last-failure'" in html
        finally:
            await carol.close()
            await dave.close()


async def test_export_over_http_is_one_verified_zip(tmp_path: Path) -> None:
    import io
    import re
    import zipfile

    async with running(console_config(tmp_path / "data")) as relay:
        base = relay.base_url
        await client_says(relay, "walt", "a guaranteed profit for you")
        carol, _, csrf = await login(base, "carol")
        try:
            async with carol.post(base + "/console/exports/start", data={"format": ["jsonl", "html"], "csrf": csrf,
                                                                          "include_restricted": "1"}) as r:
                assert r.status == 403 and "only an admin" in await r.text()
            async with carol.post(base + "/console/exports/start", data={"format": ["jsonl", "html"], "csrf": csrf},
                                  allow_redirects=False) as r:
                assert r.status == 303
                job = r.headers["Location"].rsplit("/", 1)[1]
            for _ in range(1200):
                async with carol.get(base + f"/console/exports/{job}") as r:
                    html = await r.text()
                if "id='export-state'>done<" in html or "id='export-state'>failed<" in html:
                    break
                await asyncio.sleep(0.05)
            assert "id='export-state'>done<" in html and re.search(r"id='verify-result'[^>]*>ok:", html)
            async with carol.get(base + f"/console/exports/{job}/download") as r:
                assert r.headers["Content-Type"] == "application/zip"
                names = zipfile.ZipFile(io.BytesIO(await r.read())).namelist()
            assert f"{job}/manifest.json" in names and f"{job}/events.jsonl" in names
            assert any(n.startswith(f"{job}/transcripts/") for n in names)
            assert not any(n.startswith(f"{job}/eml/") for n in names)
            dave, _, _ = await login(base, "dave")
            async with dave.get(base + f"/console/exports/{job}/download") as r:
                assert r.status == 404
            await dave.close()
        finally:
            await carol.close()


def test_rule_filter_matches_the_key_not_a_title() -> None:
    import sqlite3

    from relay.console.queue_read import QueueQuery, build
    from relay.journal import canonical_json

    db = sqlite3.connect(":memory:")
    db.executescript("CREATE TABLE review_queue(message_id, seq, conversation, action, rules_json, state, decided_by,"
                     " decision, reason, decided_seq); CREATE TABLE messages(id, seq, ts, channel, direction, employee,"
                     " text, sender_user, sender_display, erased, conversation);"
                     " CREATE TABLE conversations(id, client_channel, client_user, client_display);")
    tricky = [{"rule": "A-1", "title": 'says "rule":"B-2"', "action": "flag"}]
    plain = [{"rule": "B-2", "title": "B", "action": "flag"}]
    for i, rules in enumerate((tricky, plain)):
        db.execute("INSERT INTO review_queue VALUES(?, ?, 'c', 'flag', ?, 'open', NULL, NULL, NULL, NULL)",
                   (f"m{i}", i, canonical_json(rules)))
        db.execute("INSERT INTO messages VALUES(?, ?, 1.0, 'x', 'inbound', 'ann', 't', 'u', 'U', 0, 'c')", (f"m{i}", i))

    class Cfg:
        desks: dict[str, object] = {}
    for rule, want in (("B-2", ["m1"]), ("A-1", ["m0"])):
        sql, params, count_sql, count_params = build(QueueQuery(rule=rule), Cfg(), ("{}", None, None), 10.0)
        assert [r[0] for r in db.execute(sql, params)] == want
        assert db.execute(count_sql, count_params).fetchone()[0] == 1


async def test_cookies_are_secure_behind_https(tmp_path: Path) -> None:
    cfg = console_config(tmp_path / "data", public_url="https://relay.example.org")
    async with running(cfg) as relay:
        base = relay.base_url
        async with aiohttp.ClientSession() as s:
            async with s.get(base + "/console/login") as r:
                assert "Secure" in r.headers["Set-Cookie"]
                token = r.cookies["relay_console_login"].value
            async with s.post(base + "/console/login", allow_redirects=False,
                              data={"reviewer": "carol", "password": "carol-pw", "login_token": token},
                              headers={"Cookie": f"relay_console_login={token}"}) as r:
                assert r.status == 303
                cookie = next(v for k, v in r.headers.items() if k == "Set-Cookie" and v.startswith("relay_console="))
                assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie


async def test_policies_page_runs_the_shadow_report_on_request(tmp_path: Path) -> None:
    from tests.compliance_support import write_policies

    cfg = console_config(tmp_path / "data")
    shadow = write_policies(tmp_path / "shadow", TEST_POLICY_STRICTER)
    cfg["policies"]["shadow"] = str(shadow)
    async with running(cfg) as relay:
        base = relay.base_url
        await client_says(relay, "walt", "a guaranteed profit for you")
        carol, _, _ = await login(base, "carol")
        try:
            async with carol.get(base + "/console/policies") as r:
                html = await r.text()
                assert "id='shadow-run'" in html and "shadow-report" not in html
            async with carol.get(base + "/console/policies", params={"shadow": "1"}) as r:
                html = await r.text()
            report = html[html.index("id='shadow-report'"):]
            assert "F-001" in report and "quarantine" in report
        finally:
            await carol.close()


TEST_POLICY_STRICTER = """\
schema: relay-policy/v1
policy: {id: review-test, version: 2}
rules:
  - id: F-001
    title: Promissory language
    severity: high
    match: {keywords: [guaranteed]}
    action: quarantine
    tests:
      - {text: "guaranteed profit", expect: quarantine}
"""


async def test_a_bad_trusted_proxy_is_a_config_error(tmp_path: Path) -> None:
    import pytest

    from relay.app import RelayApp
    from relay.config import ConfigError

    with pytest.raises(ConfigError, match="web.trusted_proxies: 'proxy.internal' is not an IP address"):
        await RelayApp.start(console_config(tmp_path / "data", web={"trusted_proxies": ["proxy.internal"]}))

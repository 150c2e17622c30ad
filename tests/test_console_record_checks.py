"""A failed record check (the scheduled journal verification) shows on every console page and on
the dashboard, not only on /healthz (issue 14: "shows on /healthz, /metrics and the console")."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from tests.console_support import client_says, console_config, login, running


async def test_a_verification_fault_is_on_every_console_page_and_the_dashboard(tmp_path: Path) -> None:
    cfg = console_config(tmp_path / "data")
    cfg["journal"] = {**cfg["journal"], "verify_every": "0.3s", "verify_full_every": "0.6s"}
    async with running(cfg) as relay:
        base = relay.base_url
        await client_says(relay, "vera", "a plain question")
        carol, status, _ = await login(base, "carol")
        try:
            assert status == 303
            for _ in range(200):
                check = relay.health.checks.get("journal_verify")
                if check is not None and check.ok:
                    break
                await asyncio.sleep(0.05)
            async with carol.get(base + "/console/dashboard") as r:
                html = await r.text()
                assert "id='record-checks'" in html and "journal_verify" in html and "passed" in html
                assert "integrity-alert" not in html
            rows = await relay.journal.fetchall("SELECT seq FROM events WHERE kind='message.received' LIMIT 1")
            bad = rows[0]["seq"]
            with sqlite3.connect(relay.config.data_dir / "journal.sqlite3") as db:
                db.execute("UPDATE events SET body_json=replace(body_json, 'question', 'questionable') WHERE seq=?",
                           (bad,))
            for _ in range(400):
                check = relay.health.checks.get("journal_verify")
                if check is not None and not check.ok:
                    break
                await asyncio.sleep(0.05)
            for path in ("/console/queue", "/console/search", "/console/policies"):
                async with carol.get(base + path) as r:
                    html = await r.text()
                    assert r.status == 200 and 'id="integrity-alert"' in html and f"seq {bad}" in html, path
            async with carol.get(base + "/console/dashboard") as r:
                assert "FAILED" in await r.text()
        finally:
            await carol.close()

"""The console's gaps of issue #11 closed: the last reload as the watcher saw it, exports listed
from disk after a restart, every decision counted per reviewer."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from relay.console.state import CONSOLE_KEY
from tests.console_support import console_config, login, running


async def _until(check: object, tries: int = 1200) -> None:
    for _ in range(tries):
        if check():  # type: ignore[operator]
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached")


async def test_policies_page_shows_the_last_reload_attempt_as_the_watcher_saw_it(tmp_path: Path) -> None:
    cfg = console_config(tmp_path / "data")
    policies = Path(cfg["policies"]["dir"])
    good = (policies / "test.yaml").read_text()
    async with running(cfg) as relay:
        base = relay.base_url
        carol, _, _ = await login(base, "carol")
        try:
            async with carol.get(base + "/console/policies") as r:
                html = await r.text()
            assert "id='reload-attempt-result'>loaded<" in html
            loads = len(await relay.journal.fetchall("SELECT 1 FROM events WHERE kind = 'policy.loaded'"))

            (policies / "test.yaml").write_text(good + "  - id: BROKEN\n    match: [\n")
            await _until(lambda: relay.watcher.last_reload is not None and relay.watcher.last_reload.result == "rejected")
            async with carol.get(base + "/console/policies") as r:
                html = await r.text()
            assert "id='reload-attempt-result'>rejected<" in html
            errors = re.search(r"<ul id='reload-attempt-errors'>(.*?)</ul>", html).group(1)
            assert re.search(r"test\.yaml:\d+", errors), errors
            rejected_at = float(re.search(r"id='reload-attempt-at' data-at='([\d.]+)'", html).group(1))

            # Reverting the edit compiles to the active set again: nothing new is journaled
            # (no policy.loaded), yet the page must say the last attempt succeeded, and when.
            (policies / "test.yaml").write_text(good)
            await _until(lambda: relay.watcher.last_reload.result == "unchanged")
            async with carol.get(base + "/console/policies") as r:
                html = await r.text()
            assert "id='reload-attempt-result'>unchanged<" in html and "reload-attempt-errors" not in html
            assert float(re.search(r"id='reload-attempt-at' data-at='([\d.]+)'", html).group(1)) >= rejected_at
            assert relay.policies.version in html
            assert len(await relay.journal.fetchall("SELECT 1 FROM events WHERE kind = 'policy.loaded'")) == loads
        finally:
            await carol.close()


async def test_dashboard_counts_every_decision_per_reviewer_also_after_an_upgrade(tmp_path: Path) -> None:
    import sqlite3

    from tests.console_support import client_says

    cfg = console_config(tmp_path / "data")

    def table(html: str) -> set[tuple[str, str, str]]:
        body = re.search(r"<table id='per-reviewer'>.*?<tbody>(.*?)</tbody>", html, re.S).group(1)
        return {tuple(re.findall(r"<td>([^<]*)</td>", row)) for row in re.findall(r"<tr>(.*?)</tr>", body)}

    want = {("carol", "annotate", "2"), ("carol", "escalate", "1"), ("dave", "compliant", "1")}
    async with running(cfg) as relay:
        base = relay.base_url
        path = relay.journal.path
        mid = await client_says(relay, "walt", "a guaranteed profit for you")
        carol, _, csrf = await login(base, "carol")
        dave, _, dcsrf = await login(base, "dave")
        try:
            for who, token, decision in ((carol, csrf, "annotate"), (carol, csrf, "annotate"),
                                         (carol, csrf, "escalate"), (dave, dcsrf, "compliant")):
                async with who.post(base + f"/console/item/{mid}/decide",
                                    data={"decision": decision, "reason": "checked", "csrf": token}) as r:
                    assert r.status == 200, await r.text()
            async with dave.get(base + "/console/dashboard") as r:
                assert table(await r.text()) == want
        finally:
            await carol.close()
            await dave.close()
    # A journal from before the projection (version 2): its projections are rebuilt from the events at open.
    db = sqlite3.connect(path)
    db.execute("DROP TABLE reviewer_decisions")
    db.execute("UPDATE meta SET value = '2' WHERE key = 'projections'")
    db.commit()
    db.close()
    async with running(cfg) as relay:
        dave, _, _ = await login(relay.base_url, "dave")
        try:
            async with dave.get(relay.base_url + "/console/dashboard") as r:
                assert table(await r.text()) == want
        finally:
            await dave.close()


async def test_finished_exports_are_listed_from_disk_after_a_restart(tmp_path: Path) -> None:
    import io
    import stat
    import zipfile

    from tests.console_support import client_says

    cfg = console_config(tmp_path / "data")
    async with running(cfg) as relay:
        base = relay.base_url
        await client_says(relay, "walt", "a guaranteed profit for you")
        carol, _, csrf = await login(base, "carol")
        try:
            async with carol.post(base + "/console/exports/start", data={"format": ["jsonl", "html"], "csrf": csrf},
                                  allow_redirects=False) as r:
                assert r.status == 303
                job = r.headers["Location"].rsplit("/", 1)[1]
            exports = relay.web[CONSOLE_KEY].exports
            await _until(lambda: exports[job].state != "running")
            assert exports[job].state == "done"
        finally:
            await carol.close()
    root = Path(cfg["data_dir"]) / "console-exports"
    for path in [root, *root.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))
    assert (root / f"{job}.json").is_file() and (root / f"{job}.zip").is_file()

    async with running(cfg) as relay:
        base = relay.base_url
        carol, _, _ = await login(base, "carol")
        dave, _, _ = await login(base, "dave")
        try:
            async with carol.get(base + "/console/exports") as r:
                html = await r.text()
            assert f"href='/console/exports/{job}'" in html and f"id='download-{job}'" in html
            assert "<td>done</td>" in html
            async with carol.get(base + f"/console/exports/{job}") as r:
                html = await r.text()
            assert "id='export-state'>done<" in html and re.search(r"id='verify-result'[^>]*>ok:", html)
            async with carol.get(base + f"/console/exports/{job}/download") as r:
                assert r.status == 200
                names = zipfile.ZipFile(io.BytesIO(await r.read())).namelist()
            assert f"{job}/manifest.json" in names
            async with dave.get(base + f"/console/exports/{job}") as r:  # someone else's export stays theirs
                assert r.status == 404
        finally:
            await carol.close()
            await dave.close()


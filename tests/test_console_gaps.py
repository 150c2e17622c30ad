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
    # A journal from before the projection: the table is counted from the events once, at open.
    db = sqlite3.connect(path)
    db.execute("DROP TABLE review_decisions")
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


class _Recording:
    """The real journal, with the SQL its reads ran kept (to ask SQLite how it answered them)."""

    def __init__(self, journal: object) -> None:
        self.journal = journal
        self.sql: list[tuple[str, object]] = []

    async def fetchall(self, sql: str, params: object = ()) -> list[object]:
        self.sql.append((sql, params))
        return await self.journal.fetchall(sql, params)  # type: ignore[attr-defined]


async def test_holds_and_erasure_requests_are_read_without_walking_the_journal(tmp_path: Path) -> None:
    from relay.compliance.holds import add_hold, load_state, request_erasure
    from relay.journal import Journal
    from tests.compliance_support import History, party

    j = await Journal.open(tmp_path / "data")
    try:
        h = History(j)
        ann = party("webchat", "ann", "Ann")
        for i in range(40):
            await h.message(f"m{i}", "c-ann", "inbound", f"message {i}", client=ann)
        await add_hold(j, "conversation", "c-ann", "SEC inquiry", "dave")
        await request_erasure(j, "webchat:ann", "DSAR-1", "erin")
        rec = _Recording(j)
        holds, restricted = await load_state(rec)  # type: ignore[arg-type]
        assert [x.value for x in holds.values()] == ["c-ann"] and set(restricted) == {"webchat:ann"}
        assert rec.sql
        for sql, params in rec.sql:
            plan = " ".join(str(r[3]) for r in await j.fetchall("EXPLAIN QUERY PLAN " + sql, params))
            assert "USING INDEX events_conversation (conversation=?" in plan, plan
    finally:
        await j.close()


async def test_the_sla_sweep_finds_past_due_items_without_walking_the_journal(tmp_path: Path) -> None:
    import time

    from relay.compliance.review import ComplianceSettings, _past_due
    from relay.journal import Journal
    from tests.journal_support import received, verdict

    j = await Journal.open(tmp_path / "data")
    try:
        for i in range(30):
            mid = f"m{i}"
            await j.append("message.received", received(mid, f"text {i}"), f"c-{i % 3}")
            await j.append("policy.verdict", verdict(mid, "flag" if i % 2 else "allow", review=bool(i % 2),
                                                     rules=["F-1"] if i % 2 else []), f"c-{i % 3}")
        await j.append("review.decided", {"message_id": "m1", "decision": "compliant", "reviewer": "carol"}, "c-1")
        await j.append("review.decided", {"message_id": "m3", "decision": "escalate", "reviewer": "relay",
                                          "reason": "late", "sla_breach": True}, "c-0")
        await j.append("review.decided", {"message_id": "m5", "decision": "annotate", "reviewer": "carol",
                                          "reason": "looked"}, "c-2")
        settings = ComplianceSettings(sla_flag=60.0)
        rec = _Recording(j)
        assert await _past_due(rec, settings, None, time.time() + 30) == []  # type: ignore[arg-type]
        due = await _past_due(rec, settings, None, time.time() + 120)  # type: ignore[arg-type]
        want = [f"m{i}" for i in range(5, 30, 2)]  # open flags; m1 closed, m3 already escalated for its SLA
        assert [x.message_id for x in due] == want
        for sql, params in rec.sql:
            plan = " ".join(str(r[3]) for r in await j.fetchall("EXPLAIN QUERY PLAN " + sql, params))
            assert "SCAN events" not in plan and "rowid>" not in plan, (sql, plan)
    finally:
        await j.close()

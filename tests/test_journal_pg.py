"""What only the PostgreSQL journal does: several writers on one chain, dedup across them,
riding out a database restart, the head row catching a cut tail, selection by `journal.url`."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from relay.journal import JournalError
from relay.journal import settings as journal_settings
from relay.journal.backend import open_journal
from relay.journal.pg import PgJournal, qmarks_to_dollars, redact_url
from tests.journal_support import REPO, received
from tests.pg_support import PgServer, drop_database, new_database, pg_server, sql  # noqa: F401  (pg_server is a fixture)


@pytest.fixture
async def url(pg_server: PgServer) -> Any:
    u = await new_database(pg_server)
    yield u
    await drop_database(u)


async def test_two_relays_append_to_one_chain_that_verifies(url: str, tmp_path: Path) -> None:
    a = await PgJournal.open(url, data_dir=tmp_path / "a", checkpoint_every=50)
    b = await PgJournal.open(url, data_dir=tmp_path / "b", checkpoint_every=50)
    try:
        async def produce(j: PgJournal, name: str) -> list[Any]:
            out = []
            for i in range(0, 300, 10):
                out += await asyncio.gather(*(j.append("admin.action", {"by": name, "i": k}) for k in range(i, i + 10)))
            return out

        ea, eb = await asyncio.gather(produce(a, "a"), produce(b, "b"))
        seqs = sorted(e.seq for e in ea + eb)
        assert len(set(seqs)) == 600
        assert a.stats.commits > 1 and b.stats.commits > 1
        both = {e.seq: e for e in ea + eb}
        # every event chains on the one before it, whichever relay wrote that one
        stored = await sql(url, "SELECT seq, prev_hash, hash, body_json FROM events ORDER BY seq")
        assert [r["seq"] for r in stored] == list(range(1, len(stored) + 1))
        for prev, row in zip(stored, stored[1:]):
            assert row["prev_hash"] == prev["hash"]
        assert [json.loads(r["body_json"]) for r in stored if r["seq"] in both] == [both[r["seq"]].body for r in stored if r["seq"] in both]
        signers = {json.loads(r["body_json"])["public_key"] for r in stored if r["seq"] not in both}
        assert len(signers) == 2  # each relay signed checkpoints with its own key
        for j in (a, b):
            report = await j.verify()
            assert report.ok and report.count == len(stored), report
    finally:
        await a.close()
        await b.close()


async def test_a_redelivered_message_is_journaled_once_across_relays(url: str, tmp_path: Path) -> None:
    a = await PgJournal.open(url, data_dir=tmp_path / "a")
    b = await PgJournal.open(url, data_dir=tmp_path / "b")
    try:
        ev = [("message.received", received("m-1", "hello", platform_id="wa-1"), "c-1")]
        results = await asyncio.gather(*(j.append_many(ev, unless_message="m-1") for j in (a, b) for _ in range(5)))
        assert sum(r is not None for r in results) == 1
        assert (await sql(url, "SELECT count(*) FROM events WHERE kind='message.received'"))[0][0] == 1
        assert await b.append_many(ev, unless_message="m-1") is None
    finally:
        await a.close()
        await b.close()


async def test_appends_wait_through_a_database_restart_and_nothing_acknowledged_is_lost(
    url: str, tmp_path: Path, pg_server: PgServer
) -> None:
    j = await PgJournal.open(url, data_dir=tmp_path, checkpoint_every=100_000)
    acknowledged: list[Any] = []
    stop = asyncio.Event()

    async def produce(p: int) -> None:
        i = 0
        while not stop.is_set():
            acknowledged.append(await j.append("admin.action", {"p": p, "i": i}))
            i += 1

    try:
        producers = [asyncio.ensure_future(produce(p)) for p in range(8)]
        while len(acknowledged) < 200:
            await asyncio.sleep(0.01)
        before = len(acknowledged)
        await asyncio.to_thread(pg_server.restart, "immediate")  # as abrupt as a crash
        while len(acknowledged) < before + 200:
            await asyncio.sleep(0.01)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*producers), 60)
        stored = {r["seq"]: r["hash"] for r in await sql(url, "SELECT seq, hash FROM events")}
        assert all(stored.get(e.seq) == e.hash for e in acknowledged)
        assert len(stored) == len(acknowledged)  # and nothing journaled twice
        assert (await j.verify()).ok
        assert await j.get_blob(await j.put_blob(b"after the restart")) == b"after the restart"
    finally:
        stop.set()
        await j.close()


async def test_a_cut_tail_is_noticed_by_the_chain_head_row(url: str, tmp_path: Path) -> None:
    j = await PgJournal.open(url, data_dir=tmp_path, checkpoint_every=100_000)
    for i in range(10):
        await j.append("admin.action", {"i": i})
    await j.close()  # checkpoint: seq 11
    await sql(url, "DELETE FROM events WHERE seq > 7")
    j = await PgJournal.open(url, data_dir=tmp_path, checkpoint_every=100_000)
    try:
        nxt = await j.append("admin.action", {"i": "after"})
        assert nxt.seq == 12
        report = await j.verify()
        assert (report.ok, report.problem, report.first_bad_seq) == (False, "seq gap", 8)
    finally:
        await j.close()


async def test_unreachable_database_is_a_clear_error_without_the_password(tmp_path: Path) -> None:
    from tests.pg_support import free_port

    bad = f"postgresql://relay:s3cret@127.0.0.1:{free_port()}/journal"
    with pytest.raises(JournalError, match="cannot connect") as exc:
        await open_journal(tmp_path, url=bad)
    assert "s3cret" not in str(exc.value) and "relay@127.0.0.1" in str(exc.value)
    with pytest.raises(JournalError, match="postgresql://"):
        await open_journal(tmp_path, url="mysql://x@y/z")
    assert redact_url("postgresql://u:p@h:1/d?x=1") == "postgresql://u@h:1/d?x=1"


def test_question_marks_become_numbered_placeholders_outside_strings() -> None:
    assert qmarks_to_dollars("SELECT ? , '?' , \"a?\" FROM t WHERE a=? AND b IN (?, ?)") == (
        "SELECT $1 , '?' , \"a?\" FROM t WHERE a=$2 AND b IN ($3, $4)"
    )


async def test_journal_url_from_the_config_selects_postgresql_and_the_cli_verifies_it(
    url: str, tmp_path: Path
) -> None:
    """`journal: {url: ...}` with the password from ${ENV}; `relay journal verify` reads it."""
    user_url = url.replace("postgresql://postgres@", "postgresql://postgres:${RELAY_TEST_PGPASS}@")
    config = tmp_path / "config.yaml"
    config.write_text(f"data_dir: ./data\njournal:\n  url: \"{user_url}\"\n  checkpoint_every: 5\n")
    env = dict(os.environ, RELAY_TEST_PGPASS="unused-with-trust")
    os.environ["RELAY_TEST_PGPASS"] = "unused-with-trust"
    try:
        s = journal_settings.load(config)
    finally:
        del os.environ["RELAY_TEST_PGPASS"]
    assert s.url is not None and "unused-with-trust" in s.url and s.data_dir == tmp_path / "data"
    j = await open_journal(s.data_dir, url=s.url, **s.open_kwargs())
    try:
        assert isinstance(j, PgJournal)
        for i in range(7):
            await j.append("admin.action", {"i": i})
    finally:
        await j.close()
    assert not (tmp_path / "data" / "journal.sqlite3").exists()

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "relay.cli", "journal", *args, "--config", str(config)],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=120)

    done = run("verify", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] and report["count"] == 9  # 7 events, a checkpoint after 5, one on close
    await sql(url, "UPDATE events SET body_json = replace(body_json, '\"i\":3', '\"i\":4') WHERE seq = 4")
    done = run("verify")
    assert done.returncode == 1 and done.stdout.startswith("seq 4: hash mismatch"), (done.stdout, done.stderr)
    done = run("rebuild")
    assert done.returncode == 0 and "rebuilt projections from 9 events" in done.stdout, done.stderr


async def test_search_and_show_on_postgresql_find_chinese_japanese_and_latin(url: str, tmp_path: Path) -> None:
    """`relay journal search` answers from the pg_trgm index (any substring, case-insensitive
    for Latin letters, one- and two-character CJK words too); `show` streams the events."""
    from tests.journal_support import verdict

    config = tmp_path / "config.yaml"
    config.write_text(f"data_dir: ./data\njournal:\n  url: \"{url}\"\n")
    j = await PgJournal.open(url, data_dir=tmp_path / "data")
    try:
        for mid, text in (("zh", "我想查询一下我的账户余额，谢谢"), ("ja", "口座の残高を確認したいのですが"),
                          ("en", "Please transfer the Funds before Friday")):
            await j.append("message.received", received(mid, text), "c-1")
        await j.append("policy.verdict", verdict("en", "flag", rules=["MNPI-1"]), "c-1")
    finally:
        await j.close()

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "relay.cli", "journal", *args, "--config", str(config)],
                              cwd=REPO, capture_output=True, text=True, timeout=120)

    def ids(*args: str) -> list[str]:
        done = run("search", *args, "--json")
        assert done.returncode == 0, done.stderr
        return [json.loads(line)["id"] for line in done.stdout.splitlines()]

    assert ids("账户余额") == ["zh"]
    assert ids("残高を確認") == ["ja"]
    assert ids("funds BEFORE") == ["en"]
    assert ids("余额") == ["zh"]
    assert ids("余额不足") == []
    assert ids("--rule", "MNPI-1") == ["en"]
    done = run("show", "--kind", "message.received", "--json")
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["body"]["id"] for line in done.stdout.splitlines()] == ["zh", "ja", "en"]


async def test_the_review_queue_reads_on_postgresql(url: str, tmp_path: Path) -> None:
    """The review workflow's reader (also run by `relay run`'s SLA sweep) on PostgreSQL."""
    from relay.compliance.review import load_items
    from tests.journal_support import verdict

    j = await PgJournal.open(url, data_dir=tmp_path)
    try:
        for mid, review in (("m1", True), ("m2", False), ("m3", True)):
            await j.append("message.received", received(mid, f"text {mid}"), "c-1")
            await j.append("policy.verdict", verdict(mid, "quarantine" if review else "allow", review=review), "c-1")
        await j.append("policy.verdict", dict(verdict("m2", "quarantine", review=True), shadow=True), "c-1")
        items = await load_items(j)
        assert sorted(items) == ["m1", "m3"]
        assert sorted(await load_items(j, "m3")) == ["m3"]
    finally:
        await j.close()


def test_projection_runs_keep_each_conversations_order_and_group_the_rest() -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from relay.journal.pg_projections import plan_runs

    kinds = ["message.received", "policy.verdict", "delivery.queued", "message.delivered", "retention.erased",
             "conversation.assigned", "checkpoint"]

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.tuples(st.sampled_from(kinds), st.sampled_from(["c1", "c2", "c3", None])), max_size=40))
    def check(spec: list[tuple[str, str | None]]) -> None:
        events = [(seq, 0.0, kind, conv, {}, "", "", "") for seq, (kind, conv) in enumerate(spec, 1)]
        runs = plan_runs(events)
        flat = [ev for run in runs for ev in run]
        assert all(len({ev[2] for ev in run}) == 1 for run in runs)
        assert sorted(ev[0] for ev in flat) == [ev[0] for ev in events if ev[2] != "checkpoint"]
        position = {ev[0]: i for i, ev in enumerate(flat)}
        for a in flat:
            for b in flat:
                same = a[3] == b[3] or "retention.erased" in (a[2], b[2])
                if same and a[0] < b[0]:
                    assert position[a[0]] < position[b[0]], (spec, runs)

    check()
    # the hub's interleaving of many conversations: three runs, not three per message
    batch = [(i * 3 + k, 0.0, kind, f"c{i}", {}, "", "", "")
             for i in range(50) for k, kind in enumerate(kinds[:3])]
    assert [len(run) for run in plan_runs(batch)] == [50, 50, 50]

"""The hub, routing and outbox through two in-process channels (bots/memory.py) and a real journal."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from bots.memory.channel import MemoryChannel
from relay.app import RelayApp
from relay.model import Attachment
from tests.e2e_support import ROOT
from tests.journal_support import BACKENDS, journal_block

JOURNAL: dict[str, Any] = {}
"""The `journal:` block every config here gets: each test runs on both backends."""


@pytest.fixture(params=BACKENDS, autouse=True)
async def backend(request: pytest.FixtureRequest) -> Any:
    block, url = await journal_block(request.param)
    JOURNAL.clear()
    JOURNAL.update(block)
    yield request.param
    JOURNAL.clear()
    if url is not None:
        from tests.pg_support import drop_database

        await drop_database(url)


def memory_config(data_dir: Path, members: tuple[str, ...] = ("ann", "ben"), **extra: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "data_dir": str(data_dir),
        "listen": {"host": "127.0.0.1", "port": 0},
        "policies": {"dir": str(ROOT / "policies")},
        "outbox": {"base_delay": 0.02, "max_delay": 0.2},
        "channels": {"clients": {"network": "memory", "side": "client"},
                     "staff": {"network": "memory", "side": "staff"}},
        "employees": {n: {"name": n.title(), "staff": {"channel": "staff", "address": n}} for n in ("ann", "ben", "cid")},
        "desks": {"desk": {"clients": ["clients"], "members": list(members)}},
        "journal": dict(JOURNAL),
    }
    cfg.update(extra)
    return cfg


def windowed(data_dir: Path, window: int, latency: float) -> dict[str, Any]:
    cfg = memory_config(data_dir, members=("ann",))
    cfg["channels"]["staff"].update(send_window=window, latency=latency)
    return cfg


async def until(pred: Any, timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.01)):
        if pred():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


async def start(tmp_path: Path, **kw: Any) -> tuple[RelayApp, MemoryChannel, MemoryChannel]:
    relay = await RelayApp.start(memory_config(tmp_path / "data", **kw))
    assert type(relay.journal).__name__ == ("PgJournal" if JOURNAL.get("url") else "Journal")
    return relay, relay.channels["clients"], relay.channels["staff"]  # type: ignore[return-value]


async def test_round_robin_assignment_is_sticky(tmp_path: Path) -> None:
    relay, clients, staff = await start(tmp_path)
    try:
        for who in ("u1", "u2", "u1", "u2"):
            await clients.inject(who, f"hello from {who}", f"{who}:{len(staff.sent)}-{who}")
        await until(lambda: len(staff.sent) == 4)
        by_user = {}
        for out in staff.sent:
            by_user.setdefault(out.client.user, set()).add(out.to.user)
        assert by_user == {"u1": {"ann"}, "u2": {"ben"}}
        rows = await relay.journal.fetchall("SELECT COUNT(*) AS n FROM events WHERE kind = 'conversation.assigned'")
        assert rows[0]["n"] == 2
    finally:
        await relay.stop()


async def test_reply_from_unassigned_or_unknown_staff_is_journaled_refused_and_answered(tmp_path: Path) -> None:
    relay, clients, staff = await start(tmp_path, members=("ann",))
    try:
        r = await clients.inject("u1", "need help", "u1:1")
        await until(lambda: len(staff.sent) == 1)
        await staff.inject("ben", "I am not assigned", "ben:1", chat=r.conversation)
        await staff.inject("mallory", "who am I", "mallory:1", chat=r.conversation)
        await until(lambda: len([o for o in staff.sent if o.kind == "notice"]) == 2)
        assert not clients.sent
        rows = await relay.journal.fetchall("SELECT body_json FROM events WHERE kind = 'message.received' "
                                            "AND json_extract(body_json, '$.refused') IS NOT NULL")
        assert len(rows) == 2
        await staff.inject("ann", "happy to help", "ann:1", chat=r.conversation)
        await until(lambda: len(clients.sent) == 1)
        assert clients.sent[0].text.endswith("happy to help")
        assert clients.sent[0].to.user == "u1"
    finally:
        await relay.stop()


@pytest.mark.parametrize("window", [1, 8])
async def test_offline_recipient_gets_everything_in_order_after_wake(tmp_path: Path, window: int) -> None:
    """Also with a send window: every send of the window fails and is journaled, none overtakes."""
    relay = await RelayApp.start(windowed(tmp_path / "data", window, 0.0))
    clients: MemoryChannel = relay.channels["clients"]  # type: ignore[assignment]
    staff: MemoryChannel = relay.channels["staff"]  # type: ignore[assignment]
    try:
        staff.online = False
        for i in range(30):
            await clients.inject("u1", f"m{i}", f"u1:{i}")
        for _ in range(500):  # every send of the first window fails, and each failure is journaled
            failed = await relay.journal.fetchall("SELECT COUNT(*) AS n FROM events WHERE kind = 'delivery.failed'")
            if failed[0]["n"] >= window:
                break
            await asyncio.sleep(0.01)
        assert failed[0]["n"] >= window
        staff.online = True
        relay.outbox.wake("staff", "ann")
        await until(lambda: len(staff.sent) == 30)
        assert [o.text for o in staff.sent] == [f"m{i}" for i in range(30)]
    finally:
        await relay.stop()


async def test_permanent_failure_is_journaled_and_the_sender_told(tmp_path: Path) -> None:
    relay, clients, staff = await start(tmp_path, members=("ann",))
    try:
        r = await clients.inject("u1", "first", "u1:1")
        await until(lambda: len(staff.sent) == 1)
        clients.permanent_error = "bot was blocked by the user"
        await staff.inject("ann", "answer", "ann:1", chat=r.conversation)
        await until(lambda: any(o.kind == "notice" for o in staff.sent))
        notice = [o for o in staff.sent if o.kind == "notice"][0]
        assert "bot was blocked by the user" in notice.text
        rows = await relay.journal.fetchall("SELECT reason, state FROM deliveries WHERE state = 'failed'")
        assert rows and rows[0]["reason"] == "bot was blocked by the user"
    finally:
        await relay.stop()


async def test_pending_deliveries_resume_after_restart(tmp_path: Path) -> None:
    relay, clients, staff = await start(tmp_path, members=("ann",))
    staff.online = False
    for i in range(10):
        await clients.inject("u1", f"r{i}", f"u1:{i}")
    await relay.stop()
    relay, clients, staff = await start(tmp_path, members=("ann",))
    try:
        await until(lambda: len(staff.sent) == 10)
        assert [o.text for o in staff.sent] == [f"r{i}" for i in range(10)]
        for _ in range(300):
            rows = await relay.journal.fetchall("SELECT COUNT(*) AS n FROM deliveries WHERE state = 'queued'")
            if rows[0]["n"] == 0:
                break
            await asyncio.sleep(0.01)
        assert rows[0]["n"] == 0
    finally:
        await relay.stop()


async def test_edit_is_reevaluated_and_sent_as_an_edit_of_the_delivered_message(tmp_path: Path) -> None:
    relay, clients, staff = await start(tmp_path, members=("ann",))
    try:
        await clients.inject("u1", "see you soon", "u1:1")
        await until(lambda: len(staff.sent) == 1)
        await clients.inject("u1", "card 4111 1111 1111 1111", "u1:1:e", kind="edit", edits="u1:1")
        await until(lambda: len(staff.sent) == 2)
        edit = staff.sent[1]
        assert edit.kind == "edit" and edit.edits == "staff-1"
        assert "4111" not in edit.text and edit.action == "redact"
    finally:
        await relay.stop()


async def test_oversize_attachment_is_journaled_as_refused_and_the_client_told(tmp_path: Path) -> None:
    relay, clients, staff = await start(tmp_path, members=("ann",), limits={"max_attachment_bytes": 1000})
    try:
        big = Attachment.of("big.pdf", "application/pdf", b"x" * 5000)
        small = Attachment.of("small.pdf", "application/pdf", b"%PDF-1.4 tiny")
        await clients.inject("u1", "two files", "u1:1", attachments=(big, small))
        await until(lambda: len(staff.sent) == 1 and len(clients.sent) == 1)
        assert [a.name for a in staff.sent[0].attachments] == ["small.pdf"]
        assert staff.sent[0].attachments[0].data == b"%PDF-1.4 tiny"
        assert clients.sent[0].kind == "notice" and "big.pdf" in clients.sent[0].text
        rows = await relay.journal.fetchall("SELECT attachments_json FROM messages WHERE id IS NOT NULL AND text = 'two files'")
        assert "too large" in rows[0]["attachments_json"]
        assert await relay.journal.get_blob(small.sha256) == b"%PDF-1.4 tiny"
    finally:
        await relay.stop()


async def test_concurrent_duplicates_make_one_entry(tmp_path: Path) -> None:
    relay, clients, staff = await start(tmp_path, members=("ann",))
    try:
        receipts = await asyncio.gather(*(clients.inject("u1", "dup", "u1:same") for _ in range(10)))
        assert sum(not r.duplicate for r in receipts) == 1
        assert len({r.message_id for r in receipts}) == 1
        await until(lambda: len(staff.sent) == 1)
        await asyncio.sleep(0.1)
        assert len(staff.sent) == 1
    finally:
        await relay.stop()


async def test_policy_edit_is_hot_reloaded_journaled_and_a_broken_edit_keeps_the_last_good_set(tmp_path: Path) -> None:
    import shutil

    pol = tmp_path / "policies"
    shutil.copytree(ROOT / "policies", pol)
    relay = await RelayApp.start(memory_config(tmp_path / "data", members=("ann",),
                                               policies={"dir": str(pol), "reload_seconds": 0.05}))
    clients: MemoryChannel = relay.channels["clients"]  # type: ignore[assignment]
    staff: MemoryChannel = relay.channels["staff"]  # type: ignore[assignment]
    try:
        first_version = relay.policies.version
        await clients.inject("u1", "pineapple express", "u1:1")
        await until(lambda: len(staff.sent) == 1)
        assert staff.sent[0].action == "allow"
        (pol / "fruit.yaml").write_text(
            "schema: relay-policy/v1\npolicy: {id: fruit, version: 1}\nrules:\n"
            "  - id: FRUIT-1\n    title: fruit\n    match: {keywords: [pineapple]}\n    action: flag\n"
            "    tests: [{text: pineapple, expect: flag}]\n")
        await until(lambda: relay.policies.version != first_version)
        await clients.inject("u1", "pineapple again", "u1:2")
        await until(lambda: len(staff.sent) == 2)
        assert staff.sent[1].action == "flag" and staff.sent[1].rules == ("FRUIT-1",)
        good = relay.policies.version
        (pol / "fruit.yaml").write_text("schema: relay-policy/v1\npolicy: {id: fruit, version: 2}\nrules:\n"
                                        "  - id: FRUIT-1\n    match: {regex: '(unclosed'}\n    action: flag\n")
        await until(lambda: bool(relay.watcher and relay.watcher.last_errors))
        assert relay.policies.version == good
        assert any("fruit.yaml:" in e for e in relay.watcher.last_errors)
        loaded = await relay.journal.fetchall("SELECT json_extract(body_json, '$.version') AS v FROM events "
                                              "WHERE kind = 'policy.loaded' ORDER BY seq")
        assert [r["v"] for r in loaded] == [first_version, good]
        failures: list = []
        for _ in range(200):
            failures = await relay.journal.fetchall("SELECT body_json FROM events WHERE kind = 'admin.action' AND "
                                                    "json_extract(body_json, '$.action') = 'policy.reload_failed'")
            if failures:
                break
            await asyncio.sleep(0.01)
        assert failures and "fruit.yaml:5:" in failures[0]["body_json"]
        rows = await relay.journal.fetchall("SELECT json_extract(body_json, '$.policy_version') AS v FROM events "
                                            "WHERE kind = 'policy.verdict' ORDER BY seq")
        assert [r["v"] for r in rows] == [first_version, good]
    finally:
        await relay.stop()


async def test_redelivery_after_a_restart_is_recognised_by_the_journal_writer(tmp_path: Path) -> None:
    relay, clients, staff = await start(tmp_path, members=("ann",))
    first = await clients.inject("u1", "once", "u1:42")
    await until(lambda: len(staff.sent) == 1)
    await relay.stop()
    relay, clients, staff = await start(tmp_path, members=("ann",))
    try:
        again = await clients.inject("u1", "once", "u1:42")
        assert again.duplicate and again.message_id == first.message_id
        rows = await relay.journal.fetchall("SELECT COUNT(*) AS n FROM events WHERE kind = 'message.received'")
        assert rows[0]["n"] == 1
        await asyncio.sleep(0.1)
        assert staff.sent == []
    finally:
        await relay.stop()


async def test_an_edit_of_the_first_reply_keeps_the_recording_notice(tmp_path: Path) -> None:
    relay, clients, staff = await start(tmp_path, members=("ann",))
    try:
        r = await clients.inject("u1", "hello", "u1:1")
        await until(lambda: len(staff.sent) == 1)
        await staff.inject("ann", "Hi, Ann here", "ann:1", chat=r.conversation)
        await until(lambda: len(clients.sent) == 1)
        notice = "This conversation is recorded for regulatory purposes."
        assert clients.sent[0].text.startswith(notice)
        await staff.inject("ann", "Hi, Ann here. Ask away.", "ann:1:e", chat=r.conversation, kind="edit", edits="ann:1")
        await until(lambda: len(clients.sent) == 2)
        assert clients.sent[1].kind == "edit" and clients.sent[1].text.startswith(notice)
        assert clients.sent[1].text.count(notice) == 1
    finally:
        await relay.stop()


async def test_receipts_and_failure_statuses_are_linked_to_the_delivery(tmp_path: Path) -> None:
    relay, clients, staff = await start(tmp_path, members=("ann",))
    try:
        r = await clients.inject("u1", "question", "u1:1")
        await until(lambda: len(staff.sent) == 1)
        await staff.inject("ann", "answer one", "ann:1", chat=r.conversation)
        await staff.inject("ann", "answer two", "ann:2", chat=r.conversation)
        await until(lambda: len(clients.sent) == 2)
        for _ in range(100):
            rows = await relay.journal.fetchall("SELECT platform_id FROM deliveries WHERE channel = 'clients' "
                                                "AND state = 'delivered' ORDER BY seq")
            if len(rows) == 2:
                break
            await asyncio.sleep(0.02)
        first, second = rows[0]["platform_id"], rows[1]["platform_id"]
        await clients.inject("whatsapp", "status:delivered", f"st:{first}", chat="u1", kind="event", reply_to=first)
        await clients.inject("whatsapp", "status:failed:131047 Re-engagement message", f"st:{second}", chat="u1",
                             kind="event", reply_to=second)
        receipts = await relay.journal.fetchall("SELECT json_extract(body_json, '$.status') AS s, "
                                                "json_extract(body_json, '$.platform_id') AS p FROM events "
                                                "WHERE kind = 'delivery.receipt' ORDER BY seq")
        assert [(x["s"], x["p"]) for x in receipts] == [("status:delivered", first),
                                                        ("status:failed:131047 Re-engagement message", second)]
        await until(lambda: any(o.kind == "notice" and "131047" in o.text for o in staff.sent))
        failed = await relay.journal.fetchall("SELECT state FROM deliveries WHERE platform_id = ?", (second,))
        assert failed[0]["state"] == "failed"
    finally:
        await relay.stop()


async def test_calls_started_in_order_are_journaled_and_delivered_in_order_sharing_commits(tmp_path: Path) -> None:
    relay, clients, staff = await start(tmp_path, members=("ann",))
    try:
        commits_before = relay.journal.stats.commits
        tasks = [asyncio.create_task(clients.inject("u1", f"p{i}", f"u1:{i}")) for i in range(50)]
        await asyncio.gather(*tasks)
        await until(lambda: len(staff.sent) == 50)
        assert [o.text for o in staff.sent] == [f"p{i}" for i in range(50)]
        rows = await relay.journal.fetchall("SELECT text FROM messages WHERE direction = 'inbound' ORDER BY seq")
        assert [r["text"] for r in rows] == [f"p{i}" for i in range(50)]
        assert relay.journal.stats.commits - commits_before < 50
    finally:
        await relay.stop()


async def test_conversation_locks_do_not_accumulate(tmp_path: Path) -> None:
    relay, clients, staff = await start(tmp_path, members=("ann",))
    try:
        await asyncio.gather(*(clients.inject(f"u{i}", "hi", f"u{i}:1") for i in range(100)))
        assert relay.hub._locks == {}
        await until(lambda: len(staff.sent) == 100)
    finally:
        await relay.stop()


async def test_a_send_window_overlaps_confirmations_and_keeps_order(tmp_path: Path) -> None:
    """With `send_window` 8 and a 50 ms round trip, 40 messages of one conversation are
    delivered in order, in a fraction of the 2 s that one-at-a-time would take."""
    relay = await RelayApp.start(windowed(tmp_path / "data", 8, 0.05))
    clients: MemoryChannel = relay.channels["clients"]  # type: ignore[assignment]
    staff: MemoryChannel = relay.channels["staff"]  # type: ignore[assignment]
    try:
        for i in range(40):
            await clients.inject("u1", f"m{i}", f"u1:{i}")
        await until(lambda: relay.outbox.pending == 0 and relay.outbox.delivered == 40, timeout=10)
        assert [o.text for o in staff.sent] == [f"m{i}" for i in range(40)]
        assert staff.max_in_flight > 1
        assert staff.max_in_flight <= 8
        for _ in range(500):  # `message.delivered` commits while the lane goes on
            done = await relay.journal.fetchall("SELECT COUNT(*) AS n FROM events WHERE kind = 'message.delivered'")
            if done[0]["n"] == 40:
                break
            await asyncio.sleep(0.01)
        rows = await relay.journal.fetchall(
            "SELECT json_extract(e.body_json, '$.message_id') AS mid FROM events e WHERE e.kind = 'message.delivered' "
            "ORDER BY e.seq")
        texts = await relay.journal.fetchall("SELECT id, text FROM messages")
        by_id = {r["id"]: r["text"] for r in texts}
        assert [by_id[r["mid"]] for r in rows] == [f"m{i}" for i in range(40)]
    finally:
        await relay.stop()


async def test_a_one_off_failure_inside_a_window_is_sent_again_before_the_messages_after_it(tmp_path: Path) -> None:
    relay = await RelayApp.start(windowed(tmp_path / "data", 8, 0.01))
    clients: MemoryChannel = relay.channels["clients"]  # type: ignore[assignment]
    staff: MemoryChannel = relay.channels["staff"]  # type: ignore[assignment]
    try:
        staff.fail_once = {"m2"}
        for i in range(10):
            await clients.inject("u1", f"m{i}", f"u1:{i}")
        await until(lambda: relay.outbox.pending == 0 and relay.outbox.delivered == 10, timeout=10)
        assert [o.text for o in staff.sent] == [f"m{i}" for i in range(10)]
        failed = await relay.journal.fetchall(
            "SELECT json_extract(body_json, '$.reason') AS reason FROM events WHERE kind = 'delivery.failed'")
        reasons = [r["reason"] for r in failed]
        assert "memory channel: one-off failure" in reasons
    finally:
        await relay.stop()


async def test_stopping_with_a_window_in_flight_resends_it_in_order_after_restart(tmp_path: Path) -> None:
    """The stop cancels the window's unconfirmed sends; after the restart everything not
    confirmed before the stop is sent again, in order, and every message is delivered once in
    the journal."""
    cfg = windowed(tmp_path / "data", 8, 2.0)  # slow confirmations: a window is in flight at the stop
    relay = await RelayApp.start(cfg)
    clients: MemoryChannel = relay.channels["clients"]  # type: ignore[assignment]
    staff: MemoryChannel = relay.channels["staff"]  # type: ignore[assignment]
    for i in range(12):
        await clients.inject("u1", f"m{i}", f"u1:{i}")
    await until(lambda: staff.in_flight >= 2)
    await relay.stop()
    assert staff.in_flight == 0
    confirmed = relay.outbox.delivered
    assert confirmed < 12
    cfg["channels"]["staff"]["latency"] = 0.01
    relay = await RelayApp.start(cfg)
    staff = relay.channels["staff"]  # type: ignore[assignment]
    try:
        await until(lambda: len(staff.sent) == 12 - confirmed)
        assert [o.text for o in staff.sent] == [f"m{i}" for i in range(confirmed, 12)]
        for _ in range(300):
            rows = await relay.journal.fetchall(
                "SELECT COUNT(DISTINCT json_extract(body_json, '$.message_id')) AS n, COUNT(*) AS total "
                "FROM events WHERE kind = 'message.delivered'")
            if rows[0]["total"] >= 12:
                break
            await asyncio.sleep(0.01)
        assert rows[0]["n"] == 12 and rows[0]["total"] == 12
    finally:
        await relay.stop()

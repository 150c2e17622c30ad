"""Appending: commit before return, continuity across reopen, group commit, blobs, kv, HMAC, checkpoints."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from relay.journal import Journal, JournalError
from relay.journal.chain import GENESIS, canonical_json
from relay.journal.signing import signature_ok
from tests.journal_support import Store, jopen, received, rows, store  # noqa: F401  (jopen, store are fixtures)


def documented_hash(prev: str, seq: int, ts: float, kind: str, conversation: str | None, body: object, key: bytes | None = None) -> str:
    data = prev.encode() + json.dumps(
        {"seq": seq, "ts": ts, "kind": kind, "conversation": conversation, "body": body},
        sort_keys=True, separators=(",", ":"), ensure_ascii=False,
    ).encode()
    return hmac.new(key, data, hashlib.sha256).hexdigest() if key else hashlib.sha256(data).hexdigest()


async def test_append_returns_committed_event_and_chain_follows_the_documented_formula(store: Store) -> None:
    j = await store.open()
    first = await j.append("admin.action", {"actor": "root", "action": "start", "args": {"x": [1, 2]}})
    second = await j.append("message.received", received("m1", "Grüße, 你好"), conversation="c-1")
    assert (first.seq, second.seq) == (1, 2)
    assert first.prev_hash == GENESIS and second.prev_hash == first.hash
    assert first.hash == documented_hash(GENESIS, 1, first.ts, "admin.action", None, first.body)
    assert second.hash == documented_hash(first.hash, 2, second.ts, "message.received", "c-1", second.body)
    # committed: visible to a separate connection before close
    stored = await store.rows("SELECT seq, kind, conversation, body_json, prev_hash, hash FROM events ORDER BY seq")
    assert stored[1] == (2, "message.received", "c-1", canonical_json(second.body), first.hash, second.hash)
    await j.close()


async def test_seq_and_chain_continue_after_reopen(store: Store) -> None:
    j = await store.open(checkpoint_every=1000)
    evs = [await j.append("admin.action", {"i": i}) for i in range(5)]
    await j.close()  # writes a checkpoint: seq 6
    j = await store.open()
    nxt = await j.append("admin.action", {"i": 5})
    assert nxt.seq == 7
    kinds = [r[0] for r in await store.rows("SELECT kind FROM events ORDER BY seq")]
    assert kinds == ["admin.action"] * 5 + ["checkpoint", "admin.action"]
    assert nxt.prev_hash == (await store.rows("SELECT hash FROM events WHERE seq=6"))[0][0]
    assert evs[-1].seq == 5
    report = await j.verify()
    assert report.ok and report.count == 7 and report.head == 7 and report.head_hash == nxt.hash
    await j.close()


async def test_append_many_is_one_contiguous_transaction(store: Store) -> None:
    j = await store.open()
    others = [asyncio.ensure_future(j.append("admin.action", {"n": i})) for i in range(20)]
    batch = await j.append_many([("admin.action", {"k": k}, "c-9") for k in range(10)])
    await asyncio.gather(*others)
    seqs = [e.seq for e in batch]
    assert seqs == list(range(seqs[0], seqs[0] + 10))
    assert [e.body["k"] for e in batch] == list(range(10)) and all(e.conversation == "c-9" for e in batch)
    assert await j.append_many([]) == []
    await j.close()


async def test_group_commit_batches_concurrent_appends(store: Store) -> None:
    j = await store.open(checkpoint_every=100_000)
    evs = await asyncio.gather(*(j.append("admin.action", {"i": i}) for i in range(1000)))
    assert sorted(e.seq for e in evs) == list(range(1, 1001))
    assert j.stats.events == 1000
    assert j.stats.commits < 100, j.stats
    assert j.stats.largest_batch > 10
    await j.close()


async def test_max_batch_one_commits_every_event_alone(store: Store) -> None:
    j = await store.open(max_batch=1, checkpoint_every=100_000)
    await asyncio.gather(*(j.append("admin.action", {"i": i}) for i in range(50)))
    assert j.stats.commits == 50 and j.stats.largest_batch == 1
    await j.close()


async def test_bad_bodies_are_refused_at_the_caller(store: Store) -> None:
    j = await store.open()
    with pytest.raises(TypeError):
        await j.append("admin.action", {"x": object()})
    with pytest.raises(ValueError):
        await j.append("admin.action", {"x": float("nan")})
    with pytest.raises(TypeError):
        await j.append("admin.action", ["not", "a", "dict"])  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        await j.append("", {})
    ev = await j.append("admin.action", {"ok": True})
    assert ev.seq == 1
    await j.close()
    with pytest.raises(JournalError):
        await j.append("admin.action", {})


async def test_blobs_are_content_addressed_durable_and_idempotent(tmp_path: Path, jopen: Any) -> None:
    j = await jopen(tmp_path)
    data = os.urandom(5000)
    sha = await j.put_blob(data)
    assert sha == hashlib.sha256(data).hexdigest()
    path = tmp_path / "blobs" / sha[:2] / sha
    assert path.read_bytes() == data
    mtime = path.stat().st_mtime_ns
    assert await j.put_blob(data) == sha
    assert path.stat().st_mtime_ns == mtime
    assert await j.get_blob(sha) == data
    assert await j.get_blob("0" * 64) is None
    assert await j.get_blob("../../etc/passwd") is None
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    await j.close()


async def test_kv_roundtrip_is_durable_and_not_chained(store: Store) -> None:
    j = await store.open()
    assert await j.kv_get("telegram", "topic:c-1") is None
    await j.kv_put("telegram", "topic:c-1", "42")
    assert await j.kv_get("telegram", "topic:c-1") == "42"
    await j.kv_put("telegram", "topic:c-1", "43")
    await j.kv_put("xmpp", "topic:c-1", "other")
    assert await j.kv_get("telegram", "topic:c-1") == "43"
    await j.kv_put("xmpp", "topic:c-1", None)
    assert await j.kv_get("xmpp", "topic:c-1") is None
    assert j.head[0] == 0
    await j.close()
    j = await store.open()
    assert await j.kv_get("telegram", "topic:c-1") == "43"
    await j.close()


async def test_fetchall_is_read_only(store: Store) -> None:
    j = await store.open()
    await j.append("message.received", received("m1"), "c-1")
    got = await j.fetchall("SELECT id, text FROM messages WHERE id=?", ("m1",))
    assert got[0]["id"] == "m1" and got[0]["text"] == "hello"
    with pytest.raises(Exception, match="readonly|read-only"):
        await j.fetchall("DELETE FROM events")
    assert (await j.fetchall("SELECT count(*) AS n FROM events"))[0]["n"] == 1
    await j.close()


async def test_hmac_mode_keys_the_chain_and_refuses_a_wrong_or_missing_key(store: Store) -> None:
    key = b"s3cret-key"
    j = await store.open(hmac_key=key)
    ev = await j.append("admin.action", {"a": 1})
    assert ev.hash == documented_hash(GENESIS, 1, ev.ts, "admin.action", None, ev.body, key)
    assert ev.hash != documented_hash(GENESIS, 1, ev.ts, "admin.action", None, ev.body)
    assert (await j.verify()).ok
    await j.close()
    with pytest.raises(JournalError, match="hmac_key"):
        await store.open_raw()
    with pytest.raises(JournalError, match="not the key"):
        await store.open_raw(hmac_key=b"other")
    with pytest.raises(JournalError, match="hmac_key"):
        await store.open_raw(read_only=True)
    j = await store.open(hmac_key=key, read_only=True)
    assert (await j.verify()).ok
    await j.close()
    plain = await store.other("plain")
    j = await plain.open()
    await j.close()
    with pytest.raises(JournalError, match="without HMAC"):
        await plain.open_raw(hmac_key=key)


async def test_checkpoints_every_n_events_signed_and_filed(store: Store) -> None:
    cp_dir = store.data_dir.parent / "sink"
    j = await store.open(checkpoint_every=10, checkpoint_dir=cp_dir)
    for i in range(25):
        await j.append("admin.action", {"i": i})
    assert j.stats.checkpoints == 2
    await j.close()
    cps = await store.rows("SELECT seq, body_json FROM events WHERE kind='checkpoint' ORDER BY seq")
    assert [seq for seq, _ in cps] == [11, 22, 28]  # two by count, one on close
    pub = (store.data_dir / "keys" / "journal_ed25519.pub").read_text()
    assert "PUBLIC KEY" in pub
    key_mode = stat.S_IMODE((store.data_dir / "keys" / "journal_ed25519").stat().st_mode)
    assert key_mode == 0o600
    for seq, body_json in cps:
        body = json.loads(body_json)
        assert body["upto_seq"] == seq - 1
        assert body["head_hash"] == (await store.rows("SELECT hash FROM events WHERE seq=?", (seq - 1,)))[0][0]
        assert signature_ok(body)
        assert not signature_ok(dict(body, upto_seq=seq))
        record = json.loads((cp_dir / f"checkpoint-{seq:012d}.json").read_text())
        assert record["seq"] == seq and record["signature"] == body["signature"]
    # closing again without new events adds no checkpoint
    j = await store.open(checkpoint_every=10, checkpoint_dir=cp_dir)
    await j.close()
    assert len(await store.rows("SELECT seq FROM events WHERE kind='checkpoint'")) == 3


async def test_checkpoint_after_checkpoint_seconds_when_there_are_new_events(store: Store) -> None:
    j = await store.open(checkpoint_every=1000, checkpoint_seconds=0.05)
    await j.append("admin.action", {"i": 1})
    for _ in range(200):
        if j.stats.checkpoints:
            break
        await asyncio.sleep(0.01)
    assert j.stats.checkpoints == 1
    await asyncio.sleep(0.15)
    assert j.stats.checkpoints == 1  # nothing new, no new checkpoint
    await j.close()
    assert len(list((store.data_dir / "checkpoints").glob("checkpoint-*.json"))) == 1


async def test_read_only_open_refuses_writes_and_a_missing_journal(store: Store) -> None:
    missing = await store.other("missing")
    with pytest.raises(JournalError, match="no journal"):
        await missing.open_raw(read_only=True)
    j = await store.open()
    await j.append("admin.action", {})
    await j.close()
    r = await store.open(read_only=True)
    assert r.head[0] == 2
    with pytest.raises(JournalError, match="read-only"):
        await r.append("admin.action", {})
    with pytest.raises(JournalError, match="read-only"):
        await r.put_blob(b"x")
    await r.close()
    assert not missing.data_dir.exists()
    if missing.url is not None:  # nor were tables made in the database
        assert await missing.rows("SELECT to_regclass('events')") == [(None,)]


async def test_invalid_options_are_refused(store: Store) -> None:
    with pytest.raises(JournalError, match="synchronous"):
        await store.open_raw(synchronous="SOMETIMES")
    j = await store.open(synchronous="normal")
    assert (await j.append("admin.action", {})).seq == 1
    await j.close()


async def test_a_second_writer_is_refused_while_the_first_is_open(tmp_path: Path, jopen: Any) -> None:
    j = await jopen(tmp_path)
    await j.append("admin.action", {})
    with pytest.raises(JournalError, match="in use by another relay process"):
        await Journal.open(tmp_path)
    reader = await jopen(tmp_path, read_only=True)
    assert (await reader.verify()).ok
    await j.close()
    again = await jopen(tmp_path)
    assert (await again.append("admin.action", {})).seq == 3


async def test_concurrent_puts_of_the_same_bytes(tmp_path: Path, jopen: Any) -> None:
    j = await jopen(tmp_path)
    data = b"same attachment" * 1000
    shas = await asyncio.gather(*(j.put_blob(data) for _ in range(20)))
    assert len(set(shas)) == 1
    assert [p.name for p in (tmp_path / "blobs" / shas[0][:2]).iterdir()] == [shas[0]]


async def test_wal_is_restarted_under_sustained_load(tmp_path: Path, jopen: Any) -> None:
    j = await jopen(tmp_path, checkpoint_every=100_000)
    j.wal_flush_events, j.wal_restart_frames = 100, 200

    async def producer(p: int) -> None:
        for i in range(60):
            await j.append("admin.action", {"p": p, "i": i, "pad": "x" * 500})

    await asyncio.gather(*(producer(p) for p in range(100)))
    await j.close()
    assert j.stats.wal_restarts >= 1
    r = await jopen(tmp_path, read_only=True)
    assert (await r.verify()).ok
    assert (await r.fetchall("SELECT count(*) FROM events WHERE kind='admin.action'"))[0][0] == 6000

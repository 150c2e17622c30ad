"""verify() names the first seq that breaks and how: edits, deletions, reordering, blobs, truncation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.journal_support import Store, received, store  # noqa: F401  (store is a fixture)


async def build(store: Store, n: int = 12, **kw: Any) -> tuple[Store, list[str]]:
    """A journal with `n` messages, each with a raw blob; closed (so a checkpoint file exists)."""
    j = await store.open(checkpoint_every=1000, **kw)
    shas = []
    for i in range(n):
        sha = await j.put_blob(f"raw payload {i}".encode())
        shas.append(sha)
        await j.append("message.received", received(f"m{i}", f"text {i}", raw_sha256=sha), f"c-{i % 3}")
    await j.close()
    return store, shas


async def check(store: Store, **kw: Any) -> Any:
    j = await store.open(read_only=True, **kw)
    return await j.verify()


async def test_intact_journal_verifies(store: Store) -> None:
    await build(store)
    report = await check(store)
    assert report.ok and report.count == 13 and report.head == 13 and report.problem is None
    assert report.line().startswith("ok: 13 events, head seq 13 hash ")


async def test_edited_row_is_a_hash_mismatch_at_that_seq(store: Store) -> None:
    await build(store)
    body = json.loads((await store.rows("SELECT body_json FROM events WHERE seq=5"))[0][0])
    body["text"] = "I never said that"
    await store.tamper(f"UPDATE events SET body_json='{json.dumps(body)}' WHERE seq=5")
    report = await check(store)
    assert not report.ok
    assert (report.first_bad_seq, report.problem) == (5, "hash mismatch")
    assert report.count == 4 and report.line().startswith("seq 5: hash mismatch")


async def test_edited_timestamp_and_kind_are_hash_mismatches(store: Store) -> None:
    await build(store)
    await store.tamper("UPDATE events SET ts=ts+1 WHERE seq=3")
    assert ((await check(store)).first_bad_seq, (await check(store)).problem) == (3, "hash mismatch")
    await store.tamper("UPDATE events SET ts=ts-1 WHERE seq=3", "UPDATE events SET conversation='c-x' WHERE seq=2")
    report = await check(store)
    assert (report.first_bad_seq, report.problem) == (2, "hash mismatch")


async def test_rehashed_edit_breaks_the_next_link(store: Store) -> None:
    await build(store)
    await store.tamper("UPDATE events SET hash='" + "ab" * 32 + "' WHERE seq=7")
    report = await check(store)
    assert (report.first_bad_seq, report.problem) == (7, "hash mismatch")


async def test_deleted_row_is_a_seq_gap(store: Store) -> None:
    await build(store)
    await store.tamper("DELETE FROM events WHERE seq=6")
    report = await check(store)
    assert (report.first_bad_seq, report.problem) == (6, "seq gap")
    assert "seq 6 is missing" in report.detail


async def test_deleted_row_with_renumbering_is_a_prev_hash_mismatch(store: Store) -> None:
    await build(store)
    await store.tamper("DELETE FROM events WHERE seq=6", "UPDATE events SET seq=seq-1 WHERE seq>6")
    report = await check(store)
    assert (report.first_bad_seq, report.problem) == (6, "prev_hash mismatch")


async def test_reordered_pair_is_a_prev_hash_mismatch_at_the_first_of_them(store: Store) -> None:
    await build(store)
    await store.tamper(
        "UPDATE events SET seq=-1 WHERE seq=8",
        "UPDATE events SET seq=8 WHERE seq=9",
        "UPDATE events SET seq=9 WHERE seq=-1",
    )
    report = await check(store)
    assert (report.first_bad_seq, report.problem) == (8, "prev_hash mismatch")


async def test_changed_blob_and_missing_blob(store: Store) -> None:
    _, shas = await build(store)
    await store.write_blob(shas[4], b"forged payload")
    report = await check(store)
    assert (report.first_bad_seq, report.problem, report.detail) == (5, "blob changed", shas[4])
    await store.delete_blob(shas[4])
    report = await check(store)
    assert (report.first_bad_seq, report.problem) == (5, "blob missing")


async def test_attachment_blobs_are_checked_and_erased_blobs_skipped(store: Store) -> None:
    j = await store.open()
    sha = await j.put_blob(b"%PDF-1.4 statement")
    att = {"name": "s.pdf", "mime": "application/pdf", "size": 18, "sha256": sha, "platform_ref": "f1", "refused": ""}
    refused = {"name": "big.iso", "mime": "application/x-iso", "size": 10**9, "sha256": "", "platform_ref": "f2", "refused": "too large"}
    first = await j.append("message.received", received("m1", attachments=[att, refused]), "c-1")
    await j.close()
    await store.delete_blob(sha)
    report = await check(store)
    assert (report.first_bad_seq, report.problem) == (first.seq, "blob missing")
    j = await store.open()
    await j.append("retention.erased", {"seqs": [first.seq], "blobs": [sha], "reason": "retention", "actor": "system"})
    await j.close()
    assert (await check(store)).ok


async def test_truncated_tail_is_caught_by_the_checkpoint_file(store: Store) -> None:
    await build(store)
    assert (await store.rows("SELECT max(seq) FROM events"))[0][0] == 13
    await store.tamper("DELETE FROM events WHERE seq > 9")
    report = await check(store)
    assert (report.problem, report.first_bad_seq) == ("truncated", 10)
    assert "checkpoint-000000000013.json" in report.detail and "ends at seq 9" in report.detail


async def test_cut_and_regrown_tail_is_caught_by_the_checkpoint_hash(store: Store) -> None:
    await build(store)
    await store.tamper("DELETE FROM events WHERE seq > 9")
    if store.url is not None:  # PostgreSQL keeps the head in a row: a thorough attacker resets it too
        await store.tamper("UPDATE chain_head SET seq=9, since_checkpoint=9, hash=(SELECT hash FROM events WHERE seq=9)")
    j = await store.open()
    for i in range(6):
        await j.append("admin.action", {"i": i})
    await j.close()
    report = await check(store)
    assert (report.problem, report.first_bad_seq) == ("truncated", 12)  # upto_seq of the cut checkpoint


async def test_forged_checkpoint_signature_in_the_chain(store: Store) -> None:
    j = await store.open(checkpoint_every=5)
    for i in range(7):
        await j.append("admin.action", {"i": i})
    await j.append("admin.action", {"x": 1})
    await j.close()
    seq, body_json = (await store.rows("SELECT seq, body_json FROM events WHERE kind='checkpoint' ORDER BY seq LIMIT 1"))[0]
    body = json.loads(body_json)
    body["signature"] = body["signature"][:-2] + ("00" if body["signature"][-2:] != "00" else "11")
    # rewrite the whole chain from there (no HMAC, so possible) to isolate the signature check
    from relay.journal.chain import canonical_json, event_canonical, event_hash

    all_rows = await store.rows("SELECT seq, ts, kind, conversation, body_json, prev_hash, hash FROM events ORDER BY seq")
    prev = all_rows[seq - 2][6]
    fixes = []
    for r_seq, ts, kind, conv, bj, _, _ in all_rows[seq - 1 :]:
        b = body if r_seq == seq else json.loads(bj)
        h = event_hash(prev, event_canonical(r_seq, ts, kind, conv, b), None)
        fixes.append((canonical_json(b), prev, h, r_seq))
        prev = h
    await store.update_many("UPDATE events SET body_json=?, prev_hash=?, hash=? WHERE seq=?", fixes)
    for f in (store.data_dir / "checkpoints").iterdir():
        f.unlink()
    report = await check(store)
    assert (report.first_bad_seq, report.problem) == (seq, "checkpoint signature invalid")


async def test_forged_checkpoint_file_is_reported(store: Store) -> None:
    await build(store, n=3)
    path = next((store.data_dir / "checkpoints").iterdir())
    record = json.loads(path.read_text())
    record["upto_seq"] = 99
    path.write_text(json.dumps(record))
    report = await check(store)
    assert report.problem == "checkpoint signature invalid" and path.name in report.detail


async def test_hmac_journal_rehashed_by_an_attacker_without_the_key(store: Store) -> None:
    await build(store, n=4, hmac_key=b"k1")
    from relay.journal.chain import event_canonical, event_hash

    seq, ts, kind, conv, bj, prev = (await store.rows("SELECT seq, ts, kind, conversation, body_json, prev_hash FROM events WHERE seq=2"))[0]
    body = json.loads(bj)
    body["text"] = "changed"
    forged = event_hash(prev, event_canonical(seq, ts, kind, conv, body), None)
    await store.tamper(f"UPDATE events SET body_json='{json.dumps(body)}', hash='{forged}' WHERE seq=2")
    report = await check(store, hmac_key=b"k1")
    assert (report.first_bad_seq, report.problem) == (2, "hash mismatch")


async def test_verify_streams_a_larger_journal(store: Store) -> None:
    j = await store.open(checkpoint_every=500)
    for start in range(0, 3000, 300):
        await j.append_many([("admin.action", {"i": i}, None) for i in range(start, start + 300)])
    report = await j.verify(chunk=257)
    assert report.ok and report.count == 3005  # five checkpoints, one per 600 (two batches)

"""One bad unit in a group commit fails alone: the rest commit, its caller gets a clear error."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from relay.journal import JournalError
from relay.journal.chain import canonical_json, canonical_parts
from relay.journal.writer import Unit
from tests.journal_support import jopen, received  # noqa: F401  (jopen is a fixture)

CARD = "4111 1111 1111 1111"


async def test_a_lone_surrogate_is_refused_at_the_call_naming_no_content(tmp_path: Path, jopen: Any) -> None:
    j = await jopen(tmp_path)
    with pytest.raises(ValueError) as caught:
        j.append("message.received", received("m1", f"card {CARD} \ud800"), conversation="c-1")
    assert "lone surrogate" in str(caught.value) and CARD not in str(caught.value)
    with pytest.raises(ValueError):
        j.submit_many([("admin.action", {"ok": 1}, None), ("admin.action", {"x": "\udfff"}, None)])
    ev = await j.append("admin.action", {"ok": True})
    assert ev.seq == 1  # nothing of the refused calls was queued
    await j.close()


def _unchecked(kind: str, body: dict[str, Any]) -> tuple[Any, ...]:
    """An item as the writer takes it, built without the caller-side check: what reached the
    writer before that check existed, and what any future unforeseen bad unit looks like to it."""
    body_json = canonical_json(body)
    ts = time.time()
    head, tail = canonical_parts(ts, canonical_json(kind), "null", body_json)
    return (kind, None, body_json, body, ts, head, tail)


async def test_a_unit_the_writer_cannot_store_fails_alone_in_its_batch(tmp_path: Path, jopen: Any) -> None:
    j = await jopen(tmp_path, checkpoint_every=7)
    loop = asyncio.get_running_loop()
    good_before = [j.append("admin.action", {"i": i}) for i in range(20)]
    bad_event: asyncio.Future[Any] = loop.create_future()
    j._submit(Unit([_unchecked("message.received", received("m-bad", f"card {CARD} \ud800"))], bad_event))
    bad_kv: asyncio.Future[Any] = loop.create_future()
    j._submit(Unit([], bad_kv, kv=("test", "k", f"{CARD} \ud800")))
    good_after = [j.append("admin.action", {"i": i}) for i in range(20, 40)]
    good_kv = asyncio.ensure_future(j.kv_put("test", "ok", "yes"))
    done = await asyncio.gather(*good_before, *good_after)
    assert [ev.body["i"] for ev in done] == list(range(40))
    for fut in (bad_event, bad_kv):
        with pytest.raises(JournalError) as caught:
            await fut
        assert "not journaled" in str(caught.value) and "lone surrogate" in str(caught.value)
        assert CARD not in str(caught.value)
    await good_kv
    assert await j.kv_get("test", "ok") == "yes" and await j.kv_get("test", "k") is None
    report = await j.verify()
    assert report.ok, report
    rows = await j.fetchall("SELECT seq, kind, body_json FROM events ORDER BY seq")
    assert [json.loads(r["body_json"])["i"] for r in rows if r["kind"] == "admin.action"] == list(range(40))
    checkpoints = [r["seq"] for r in rows if r["kind"] == "checkpoint"]
    assert len(checkpoints) >= 5  # every 7 events, also while units commit one at a time
    await j.close()
    filed = sorted(int(p.stem.split("-")[1]) for p in (tmp_path / "checkpoints").glob("checkpoint-*.json"))
    assert set(checkpoints) <= set(filed)


async def test_kv_put_of_invalid_text_gets_a_clear_error_and_the_journal_goes_on(tmp_path: Path, jopen: Any) -> None:
    j = await jopen(tmp_path)
    with pytest.raises(JournalError, match="not journaled: state test/'k'"):
        await j.kv_put("test", "k", "\ud800")
    assert (await j.append("admin.action", {"after": True})).seq == 1
    await j.close()

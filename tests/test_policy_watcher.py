"""Hot reload against real files: a valid edit swaps the set, a broken edit keeps the last good."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from relay.policy import PolicyLoadError, PolicySet, PolicyWatcher
from tests.policy_support import evaluate, policy_file, write


class Recorder:
    def __init__(self) -> None:
        self.loaded: asyncio.Queue[PolicySet] = asyncio.Queue()
        self.errors: asyncio.Queue[list[str]] = asyncio.Queue()

    async def on_loaded(self, ps: PolicySet) -> None:
        await self.loaded.put(ps)

    async def on_error(self, errors: list[str]) -> None:
        await self.errors.put(errors)


async def next_item(queue: asyncio.Queue, timeout: float = 5.0):
    return await asyncio.wait_for(queue.get(), timeout)


async def test_valid_edit_swaps_and_broken_edit_keeps_last_good(tmp_path: Path) -> None:
    path = policy_file(tmp_path, "p.yaml", "- {id: K, match: {keywords: [alpha]}, action: flag}")
    rec = Recorder()
    watcher = PolicyWatcher(tmp_path, on_loaded=rec.on_loaded, on_error=rec.on_error, interval=0.02)
    await watcher.start()
    try:
        first = await next_item(rec.loaded)
        assert watcher.current is first
        assert evaluate(first, "alpha").action == "flag"

        policy_file(tmp_path, "p.yaml", "- {id: K, match: {keywords: [alpha, beta]}, action: block}")
        second = await next_item(rec.loaded)
        assert watcher.current is second and second.version != first.version
        assert evaluate(watcher.current, "beta").action == "block"

        path.write_text(path.read_text().replace("action: block", "action: explode"))
        errors = await next_item(rec.errors)
        assert len(errors) == 1 and errors[0].startswith(f"{path}:4: rule K: action: 'explode' is not one of")
        await asyncio.sleep(0.1)
        assert watcher.current is second
        assert evaluate(watcher.current, "beta").action == "block"
        assert rec.loaded.empty()

        policy_file(tmp_path, "p.yaml", "- {id: K, match: {keywords: [gamma]}, action: quarantine}")
        third = await next_item(rec.loaded)
        assert watcher.current is third and evaluate(third, "gamma").action == "quarantine"
        assert watcher.last_errors == []
    finally:
        await watcher.stop()


async def test_lexicon_edit_and_new_file_reload(tmp_path: Path) -> None:
    write(tmp_path, "lexicons/w.txt", "alpha\n")
    policy_file(tmp_path, "p.yaml", "- {id: K, match: {keywords: {lexicon: w}}, action: flag}")
    rec = Recorder()
    watcher = PolicyWatcher(tmp_path, on_loaded=rec.on_loaded, on_error=rec.on_error, interval=0.02)
    await watcher.start()
    try:
        await next_item(rec.loaded)
        write(tmp_path, "lexicons/w.txt", "alpha\nbravo charlie\n")
        ps = await next_item(rec.loaded)
        assert evaluate(ps, "bravo  charlie").rules == ("K",)
        policy_file(tmp_path, "q.yaml", "- {id: Q, match: {keywords: [zulu]}, action: block}")
        ps = await next_item(rec.loaded)
        assert evaluate(ps, "zulu").action == "block" and "q.yaml" in ps.files
        (tmp_path / "q.yaml").unlink()
        ps = await next_item(rec.loaded)
        assert evaluate(ps, "zulu").action == "allow"
    finally:
        await watcher.stop()


async def test_duplicate_id_in_new_file_is_rejected(tmp_path: Path) -> None:
    policy_file(tmp_path, "a.yaml", "- {id: K, action: flag}")
    rec = Recorder()
    watcher = PolicyWatcher(tmp_path, on_loaded=rec.on_loaded, on_error=rec.on_error, interval=0.02)
    await watcher.start()
    try:
        good = await next_item(rec.loaded)
        policy_file(tmp_path, "b.yaml", "- {id: K, action: block}")
        errors = await next_item(rec.errors)
        assert errors == [f"{tmp_path / 'b.yaml'}:4: duplicate rule id 'K' (first defined at {tmp_path / 'a.yaml'}:4)"]
        assert watcher.current is good
    finally:
        await watcher.stop()


async def test_start_with_invalid_set_raises_and_reports(tmp_path: Path) -> None:
    write(tmp_path, "p.yaml", "schema: relay-policy/v1\nrules: [\n")
    rec = Recorder()
    watcher = PolicyWatcher(tmp_path, on_loaded=rec.on_loaded, on_error=rec.on_error, interval=0.02)
    with pytest.raises(PolicyLoadError):
        await watcher.start()
    assert (await next_item(rec.errors))[0].startswith(f"{tmp_path / 'p.yaml'}:3: YAML syntax error")
    with pytest.raises(RuntimeError):
        watcher.current


async def test_touch_without_change_does_not_report_a_new_set(tmp_path: Path) -> None:
    path = policy_file(tmp_path, "p.yaml", "- {id: K, action: flag}")
    rec = Recorder()
    watcher = PolicyWatcher(tmp_path, on_loaded=rec.on_loaded, on_error=rec.on_error, interval=0.02)
    await watcher.start()
    try:
        first = await next_item(rec.loaded)
        path.write_text(path.read_text())
        assert await watcher.check_now() is False
        assert watcher.current is first and rec.loaded.empty()
    finally:
        await watcher.stop()

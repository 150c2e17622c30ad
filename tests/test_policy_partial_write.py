"""A policy file cut off mid-write can still be valid YAML with fewer rules: a file that
changed while it was read is refused (the last good set stays active) and said so, and a set
with fewer rules than the one it replaces carries a warning in its `policy.loaded` event."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

import relay.policy.watcher as watcher_module
from relay.policy import PolicySet, PolicyWatcher, load_policy_dir
from relay.policy.watcher import changed_while_read, fingerprint
from tests.e2e_support import running, web_config
from tests.policy_support import evaluate, policy_file

RULES = "\n".join(f"- {{id: R-{i}, match: {{keywords: [word{i}]}}, action: block}}" for i in range(6))


def test_a_file_changed_after_its_fingerprint_was_taken_is_named(tmp_path: Path) -> None:
    path = policy_file(tmp_path, "p.yaml", RULES)
    before = fingerprint(tmp_path)
    loaded = load_policy_dir(tmp_path)
    assert changed_while_read(tmp_path, before, loaded) == []
    full = path.read_text()
    path.write_text(full[: full.index("  - {id: R-3")])  # the writer had got this far
    (problem,) = changed_while_read(tmp_path, before, loaded)
    assert problem.startswith(f"{path}: changed while it was read") and "last good set stays active" in problem
    again = fingerprint(tmp_path)
    assert changed_while_read(tmp_path, again, load_policy_dir(tmp_path)) == []


async def test_the_watcher_keeps_the_last_good_set_when_a_file_changes_while_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = policy_file(tmp_path, "p.yaml", RULES)
    errors: list[list[str]] = []
    loaded: list[PolicySet] = []

    async def on_error(lines: list[str]) -> None:
        errors.append(lines)

    async def on_loaded(ps: PolicySet) -> None:
        loaded.append(ps)

    watcher = PolicyWatcher(tmp_path, on_loaded=on_loaded, on_error=on_error, interval=3600)
    await watcher.start()
    first = watcher.current
    full = path.read_text()
    # An editor rewrites the file in place: the watcher reads the half written so far, and the
    # editor writes the rest while the watcher is still busy with it.
    path.write_text(full[: full.index("  - {id: R-2")] + "  - {id: R-9, match: {keywords: [word9]}, action: block}\n")
    real_load = watcher_module.load_policy_dir

    def load_while_the_editor_writes(directory: Path) -> PolicySet:
        ps = real_load(directory)
        path.write_text(full + "  - {id: R-9, match: {keywords: [word9]}, action: block}\n")
        return ps

    monkeypatch.setattr(watcher_module, "load_policy_dir", load_while_the_editor_writes)
    assert await watcher.check_now() is False
    assert watcher.current is first and evaluate(watcher.current, "word5").action == "block"
    (lines,) = errors
    assert lines == watcher.last_errors and lines[0].startswith(f"{path}: changed while it was read")
    monkeypatch.setattr(watcher_module, "load_policy_dir", real_load)
    assert await watcher.check_now() is True  # read again at the next poll, now complete
    assert len(watcher.current.rules) == 7 and evaluate(watcher.current, "word9").action == "block"
    assert [len(ps.rules) for ps in loaded] == [6, 7] and watcher.last_warning == ""
    await watcher.stop()


async def test_a_set_with_fewer_rules_is_loaded_with_a_warning_in_its_event(tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    path = policy_file(policies, "p.yaml", RULES)
    async with running(web_config(tmp_path / "data", policies=policies)) as relay:
        full = path.read_text()
        path.write_text(full[: full.index("  - {id: R-2")])  # cut off after two rules, still valid YAML

        async def events() -> list[dict[str, Any]]:
            rows = await relay.journal.fetchall("SELECT body_json FROM events WHERE kind = 'policy.loaded' ORDER BY seq")
            return [json.loads(r["body_json"]) for r in rows]

        deadline = time.monotonic() + 10
        while len(await events()) < 2:
            assert time.monotonic() < deadline, "no reload journaled"
            await asyncio.sleep(0.05)
        first, second = await events()
        assert first["rules"] == 6 and "warning" not in first
        assert second["rules"] == 2 and second["warning"].startswith("rule count dropped from 6 to 2")
        assert relay.watcher is not None and relay.watcher.last_warning.startswith("rule count dropped from 6 to 2")

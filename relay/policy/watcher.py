"""Hot reload: polls the policy directory and swaps in a new set only when it compiles.

A change (file names, sizes, mtimes, inodes) triggers a load off the event loop; success
replaces `current` in one assignment and awaits `on_loaded`; failure keeps the last good
set, logs each problem and awaits `on_error` with the `file:line: reason` lines. A file that
changed while it was read (an editor still writing it) is such a failure too, retried at the
next poll: a half-written file can be valid YAML with fewer rules.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from relay.policy.engine import PolicySet
from relay.policy.errors import PolicyLoadError
from relay.policy.loader import LEXICON_DIR, load_policy_dir

log = logging.getLogger("relay.policy")

OnLoaded = Callable[[PolicySet], Awaitable[None]]
OnError = Callable[[list[str]], Awaitable[None]]
Fingerprint = tuple[tuple[str, int, int, int], ...]


@dataclass(frozen=True)
class ReloadAttempt:
    """The watcher's last look at a changed directory, as it saw it (the console shows it even when
    nothing was journaled, e.g. an edit reverted to the active set)."""

    at: float
    result: str  # "loaded" (a new set is active), "unchanged" (same set as active) or "rejected"
    version: str  # the set active after the attempt
    errors: tuple[str, ...] = ()


def fingerprint(directory: Path) -> Fingerprint:
    """What a change looks like from the outside: names, sizes, mtimes, inodes."""
    entries: list[tuple[str, int, int, int]] = []
    for sub in ("", LEXICON_DIR):
        folder = directory / sub if sub else directory
        try:
            with os.scandir(folder) as it:
                for entry in it:
                    if entry.name.startswith(".") or not entry.is_file():
                        continue
                    st = entry.stat()
                    name = f"{sub}/{entry.name}" if sub else entry.name
                    entries.append((name, st.st_mtime_ns, st.st_size, st.st_ino))
        except FileNotFoundError:
            entries.append((f"{sub or '.'}: missing", 0, 0, 0))
    return tuple(sorted(entries))


def changed_while_read(directory: Path, before: Fingerprint, loaded: PolicySet) -> list[str]:
    """One line per file that is not what `loaded` was read from: its bytes differ from the
    digest the set recorded, or its size, mtime or inode moved since `before` was taken."""
    names: set[str] = set()
    for rel, sha in loaded.files.items():
        try:
            if hashlib.sha256((directory / rel).read_bytes()).hexdigest() != sha:
                names.add(rel)
        except OSError:
            names.add(rel)
    after = fingerprint(directory)
    if after != before:
        names |= {e[0] for e in set(after) ^ set(before)}
    return [f"{directory / name}: changed while it was read (a write in progress?); the last good set stays "
            "active and the file is read again once it is complete" for name in sorted(names)]


def rule_drop(previous: PolicySet | None, loaded: PolicySet) -> str:
    """A warning when `loaded` has fewer rules than the set it replaces ('' otherwise)."""
    if previous is None or len(loaded.rules) >= len(previous.rules):
        return ""
    return (f"rule count dropped from {len(previous.rules)} to {len(loaded.rules)}: if a policy file was cut off "
            "or removed by mistake, restore it")


class PolicyWatcher:
    """Keeps `current` at the newest valid policy set of `directory`."""

    def __init__(
        self,
        directory: Path | str,
        on_loaded: OnLoaded | None = None,
        on_error: OnError | None = None,
        interval: float = 1.0,
    ) -> None:
        self.directory = Path(directory)
        self.interval = interval
        self._on_loaded = on_loaded
        self._on_error = on_error
        self._current: PolicySet | None = None
        self._seen: Fingerprint | None = None
        self._task: asyncio.Task[None] | None = None
        self.last_errors: list[str] = []
        self.last_reload: ReloadAttempt | None = None
        self.last_warning = ""
        """Set at each swap: the rule-count drop warning of the newest set ('' when none)."""

    @property
    def current(self) -> PolicySet:
        if self._current is None:
            raise RuntimeError("PolicyWatcher not started: no policy set loaded yet")
        return self._current

    async def start(self) -> None:
        """Load the set (raising PolicyLoadError if invalid), report it, then poll."""
        if self._task is not None:
            return
        for attempt in range(5):
            seen = await asyncio.to_thread(fingerprint, self.directory)
            try:
                loaded = await asyncio.to_thread(load_policy_dir, self.directory)
            except PolicyLoadError as exc:
                await self._report(exc.errors)
                raise
            moved = await asyncio.to_thread(changed_while_read, self.directory, seen, loaded)
            if not moved:
                break
            log.warning("policy files are being written; reading them again: %s", moved[0])
            await asyncio.sleep(self.interval)
        self._seen = seen
        self._current = loaded
        self.last_reload = ReloadAttempt(time.time(), "loaded", loaded.version)
        log.info("policy set %s loaded from %s (%d rules)", loaded.version[:12], self.directory, len(loaded.rules))
        await self._loaded(loaded)
        self._task = asyncio.create_task(self._poll(), name=f"policy-watcher:{self.directory}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    async def check_now(self) -> bool:
        """Reload if the directory changed; True when a new set was swapped in."""
        seen = await asyncio.to_thread(fingerprint, self.directory)
        if seen == self._seen:
            return False
        try:
            loaded = await asyncio.to_thread(load_policy_dir, self.directory)
        except PolicyLoadError as exc:
            self._seen = seen
            await self._report(exc.errors)
            return False
        moved = await asyncio.to_thread(changed_while_read, self.directory, seen, loaded)
        if moved:  # `_seen` stays as it was, so the next poll reads the files again
            await self._report(moved)
            return False
        self._seen = seen
        self.last_errors = []
        if self._current is not None and loaded.version == self._current.version:
            self.last_reload = ReloadAttempt(time.time(), "unchanged", loaded.version)
            return False
        self.last_warning = rule_drop(self._current, loaded)  # logged and journaled by the relay's on_loaded
        self._current = loaded
        self.last_reload = ReloadAttempt(time.time(), "loaded", loaded.version)
        log.info("policy set %s loaded from %s (%d rules)", loaded.version[:12], self.directory, len(loaded.rules))
        await self._loaded(loaded)
        return True

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.check_now()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("policy reload of %s failed unexpectedly; keeping the current set", self.directory)

    async def _loaded(self, loaded: PolicySet) -> None:
        if self._on_loaded is None:
            return
        try:
            await self._on_loaded(loaded)
        except Exception:
            log.exception("on_loaded callback failed for policy set %s", loaded.version[:12])

    async def _report(self, errors: list[str]) -> None:
        self.last_errors = list(errors)
        active = self._current.version if self._current is not None else ""
        self.last_reload = ReloadAttempt(time.time(), "rejected", active, tuple(errors))
        for line in errors:
            log.error("policy reload rejected, keeping the last good set: %s", line)
        if self._on_error is None:
            return
        try:
            await self._on_error(list(errors))
        except Exception:
            log.exception("on_error callback failed")

"""Named admin actions: the seam between the running relay and the workflow built on top of it.

The compliance workflow (review decisions, holds, handover…) lives above the core, so the core
cannot import it. Instead `relay run` and the offline CLI hand the app a `Workflow`: a table of
action names to "module:function" references (imported on first use, so `relay --help` stays
light) and the background tasks the workflow runs. An action is `async fn(app, params) -> dict`.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

Action = Callable[[Any, dict[str, Any]], Awaitable[dict[str, Any]]]
Task = Callable[[Any], Awaitable[None]]


class AdminError(Exception):
    """The action was refused for a reason the user can fix (unknown id, wrong role…)."""


def _resolve(ref: str) -> Any:
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


class ActionTable(Mapping[str, Action]):
    """Action name → "package.module:function"; the function is imported when first looked up."""

    def __init__(self, refs: Mapping[str, str]) -> None:
        self._refs = dict(refs)
        self._loaded: dict[str, Action] = {}

    def __getitem__(self, name: str) -> Action:
        fn = self._loaded.get(name)
        if fn is None:
            fn = self._loaded[name] = _resolve(self._refs[name])
        return fn

    def __iter__(self) -> Iterator[str]:
        return iter(self._refs)

    def __len__(self) -> int:
        return len(self._refs)


@dataclass(frozen=True)
class Workflow:
    """What the app is handed: its admin actions and the tasks to run while it serves."""

    actions: Mapping[str, Action] = field(default_factory=dict)
    tasks: tuple[str, ...] = ()
    """"module:function" references of `async fn(app)` run for the life of a serving relay."""
    reopened: str = ""
    """"module:function" of `async fn(app, channel, address, conversation)`: what the employee
    gets when a channel opened a conversation's lost topic anew (the recent history); empty: a
    plain notice from the app."""

    def reopened_function(self) -> Callable[[Any, str, str, str], Awaitable[None]] | None:
        return _resolve(self.reopened) if self.reopened else None

    def task_functions(self) -> list[Task]:
        return [_resolve(ref) for ref in self.tasks]

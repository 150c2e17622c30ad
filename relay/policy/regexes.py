"""RE2 patterns of a policy set: compiled once, pre-screened together with one RE2 set.

RE2 runs in linear time, so a compliance officer's pattern cannot stall the hot path; the
set tells in one pass which patterns match at all, and only those are searched for spans.
"""

from __future__ import annotations

from typing import Any

import re2

Spans = list[tuple[int, int]]


def _options() -> Any:
    options = re2.Options()
    options.log_errors = False
    return options


def compile_regex(pattern: str) -> Any:
    """Compile with RE2; raises ValueError with RE2's reason for an invalid pattern."""
    try:
        return re2.compile(pattern, _options())
    except re2.error as exc:
        reason = exc.args[0] if exc.args else str(exc)
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise ValueError(str(reason)) from exc


class RegexBank:
    """All regex leaves of a set; `matching(text)` runs the combined set once."""

    __slots__ = ("patterns", "_set")

    def __init__(self, patterns: list[str]) -> None:
        self.patterns = [compile_regex(p) for p in patterns]
        self._set: Any = None
        if len(patterns) > 1:
            regex_set = re2.Set.SearchSet(_options())
            for pattern in patterns:
                regex_set.Add(pattern)
            regex_set.Compile()
            self._set = regex_set

    def matching(self, text: str) -> frozenset[int]:
        """Indices of the patterns that match somewhere in `text`."""
        if self._set is None:
            return frozenset(i for i, p in enumerate(self.patterns) if p.search(text) is not None)
        return frozenset(self._set.Match(text) or ())

    def spans(self, index: int, text: str) -> Spans:
        return [m.span() for m in self.patterns[index].finditer(text)]

"""RE2 patterns of a policy set: compiled once, pre-screened together with one RE2 set.

RE2 runs in linear time, so a compliance officer's pattern cannot stall the hot path; the
set tells in one pass which patterns match at all, and only those are searched for spans.
"""

from __future__ import annotations

import re
from typing import Any

import re2

Spans = list[tuple[int, int]]

_SURROGATE = re.compile("[\ud800-\udfff]")


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


def searchable(text: str) -> tuple[str, bytes]:
    """`text` and its UTF-8 bytes; lone surrogates (invalid in UTF-8) become U+FFFD, same offsets."""
    try:
        return text, text.encode("utf-8")
    except UnicodeEncodeError:
        clean = _SURROGATE.sub("\ufffd", text)
        return clean, clean.encode("utf-8")


class RegexBank:
    """All regex leaves of a set; `matching(data)` runs the combined set once over UTF-8 bytes."""

    __slots__ = ("patterns", "_set")

    def __init__(self, patterns: list[str], compiled: list[Any] | None = None) -> None:
        self.patterns = compiled if compiled is not None else [compile_regex(p) for p in patterns]
        self._set: Any = None
        if patterns:
            regex_set = re2.Set.SearchSet(_options())
            for pattern in patterns:
                regex_set.Add(pattern)
            regex_set.Compile()
            self._set = regex_set

    def matching(self, data: bytes) -> frozenset[int]:
        """Indices of the patterns that match somewhere in `data` (UTF-8 from `searchable`)."""
        if self._set is None:
            return frozenset()
        return frozenset(self._set.Match(data) or ())

    def spans(self, index: int, text: str) -> Spans:
        """Character spans of every match of pattern `index` in `text` (from `searchable`)."""
        return [m.span() for m in self.patterns[index].finditer(text)]

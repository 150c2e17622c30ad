"""One Aho-Corasick automaton for every keyword leaf of a policy set.

Each folded term maps to the leaves that contain it; a scan walks the folded message once
and keeps only whole-word occurrences (a side whose term character is CJK, Thai, … or
punctuation needs no word boundary), reporting spans in the original text.
"""

from __future__ import annotations

import ahocorasick

from relay.policy.normalize import Folded, is_word_char

Spans = list[tuple[int, int]]


class KeywordIndexBuilder:
    """Collects folded terms per keyword leaf; `build()` makes the automaton."""

    def __init__(self) -> None:
        self._terms: dict[str, set[int]] = {}
        self._leaves = 0

    def add_leaf(self, folded_terms: list[str]) -> int:
        leaf = self._leaves
        self._leaves += 1
        for term in folded_terms:
            self._terms.setdefault(term, set()).add(leaf)
        return leaf

    def build(self) -> KeywordIndex:
        automaton = ahocorasick.Automaton()
        for term, leaves in self._terms.items():
            need_left = is_word_char(term[0])
            need_right = is_word_char(term[-1])
            automaton.add_word(term, (len(term), need_left, need_right, tuple(sorted(leaves))))
        if self._terms:
            automaton.make_automaton()
        return KeywordIndex(automaton if self._terms else None, len(self._terms))


class KeywordIndex:
    """The compiled automaton; `scan` is pure and safe to call from many threads."""

    __slots__ = ("_automaton", "term_count")

    def __init__(self, automaton: ahocorasick.Automaton | None, term_count: int) -> None:
        self._automaton = automaton
        self.term_count = term_count

    def scan(self, folded: Folded) -> dict[int, Spans]:
        """Whole-word occurrences per leaf id, as original-text spans in text order."""
        if self._automaton is None:
            return {}
        text = folded.text
        last = len(text) - 1
        hits: dict[int, Spans] = {}
        mapped = folded.starts is not None
        for end, (length, need_left, need_right, leaves) in self._automaton.iter(text):
            start = end - length + 1
            if need_left and start > 0 and is_word_char(text[start - 1]):
                continue
            if need_right and end < last and is_word_char(text[end + 1]):
                continue
            span = folded.span(start, end + 1) if mapped else (start, end + 1)
            for leaf in leaves:
                found = hits.get(leaf)
                if found is None:
                    hits[leaf] = [span]
                else:
                    found.append(span)
        return hits

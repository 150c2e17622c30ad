"""Text folding for keyword matching: NFKC, casefold, quote/dash/space folding.

Keywords and message text go through the same fold so that width, case and typographic
variants match; `fold_text` also maps every folded character back to the original offsets,
so a match can be reported (and redacted) in the text the user actually wrote.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

_ONE_TO_ONE = {
    **{ord(c): "'" for c in "\u2018\u2019\u201a\u201b\u2032"},
    **{ord(c): '"' for c in "\u201c\u201d\u201e\u201f\u2033\u00ab\u00bb"},
    **{ord(c): "-" for c in "\u2010\u2011\u2012\u2013\u2014\u2015\u2212"},
    **{ord(c): " " for c in "\t\n\r\v\f\x1c\x1d\x1e\x1f\x85\u2028\u2029"},
}
_DELETED = {ord(c): None for c in "\u00ad\u180e\u200b\u200c\u200d\u2060\ufeff"}
_FOLD = {**_ONE_TO_ONE, **_DELETED}
_ASCII_WS = {ord(c): " " for c in "\t\n\r\v\f\x1c\x1d\x1e\x1f"}
_NEEDS_SLOW = re.compile("[\u00ad\u180e\u200b\u200c\u200d\u2060\ufeff]| {2}")


@dataclass(frozen=True, slots=True)
class Folded:
    """Folded text plus, per folded character, its original `[start, end)` (None: identity)."""

    text: str
    starts: list[int] | None
    ends: list[int] | None

    def span(self, start: int, end: int) -> tuple[int, int]:
        """The original-text span of folded characters `[start, end)`."""
        if self.starts is None or self.ends is None:
            return start, end
        return self.starts[start], self.ends[end - 1]


def fold_text(text: str) -> Folded:
    """Fold `text` for matching; cheap when the fold maps characters one to one."""
    if text.isascii():
        folded = text.lower()
        if folded.isprintable() and "  " not in folded:
            return Folded(folded, None, None)
        folded = folded.translate(_ASCII_WS)
        if folded.isprintable() and "  " not in folded:
            return Folded(folded, None, None)
        return _fold_mapped(text)
    if unicodedata.is_normalized("NFKC", text):
        folded = text.casefold()
    elif _composing_chars().search(text) is None:
        folded = unicodedata.normalize("NFKC", text).casefold()
    else:
        return _fold_mapped(text)
    if len(folded) == len(text):
        folded = folded.translate(_ONE_TO_ONE)
        if _NEEDS_SLOW.search(folded) is None:
            return Folded(folded, None, None)
    return _fold_mapped(text)


_COMPOSING: re.Pattern[str] | None = None


def _composing_chars() -> re.Pattern[str]:
    """Characters NFKC may compose with a neighbour (marks, conjoining jamo).

    Without them NFKC never merges characters, so equal lengths before and after the fold
    prove a one-to-one mapping.
    """
    global _COMPOSING
    if _COMPOSING is None:
        ranges: list[tuple[int, int]] = [(0x1100, 0x11FF), (0xA960, 0xA97F), (0xD7B0, 0xD7FF)]
        start = None
        for cp in (*range(0x20000), *range(0xE0000, 0xE1000), 0x10FFFF):
            ch = chr(cp)
            mark = unicodedata.category(ch)[0] == "M" or unicodedata.combining(ch) != 0
            if mark and start is None:
                start = cp
            elif not mark and start is not None:
                ranges.append((start, cp - 1))
                start = None
        body = "".join(f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in ranges)
        _COMPOSING = re.compile(f"[{body}]")
    return _COMPOSING


_PLAIN_RUN = re.compile(r"[\x21-\x7e]+(?: [\x21-\x7e]+)*")


def _fold_mapped(text: str) -> Folded:
    """Fold per base character plus its combining marks, recording offsets."""
    pieces: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    combining = unicodedata.combining
    normalize = unicodedata.normalize
    last_space = False
    pos, n = 0, len(text)
    while pos < n:
        run = _PLAIN_RUN.match(text, pos)
        if run is not None:
            end = run.end()
            if end < n and combining(text[end]):
                end -= 1
            if end > pos:
                pieces.append(text[pos:end].lower())
                starts.extend(range(pos, end))
                ends.extend(range(pos + 1, end + 1))
                last_space = False
                pos = end
                continue
        end = pos + 1
        while end < n and combining(text[end]):
            end += 1
        for ch in normalize("NFKC", text[pos:end]).casefold().translate(_FOLD):
            if ch == " " and last_space:
                ends[-1] = end
                continue
            pieces.append(ch)
            starts.append(pos)
            ends.append(end)
            last_space = ch == " "
        pos = end
    return Folded("".join(pieces), starts, ends)


def fold_term(term: str) -> str:
    """A keyword as the matcher sees it (same fold as message text, trimmed)."""
    return _fold_mapped(term).text.strip()


_NO_SPACE_RANGES: tuple[tuple[int, int], ...] = (
    (0x0E00, 0x0EFF),  # Thai, Lao
    (0x1000, 0x109F),  # Myanmar
    (0x1780, 0x17FF),  # Khmer
    (0x2E80, 0x2FDF),  # CJK radicals
    (0x3000, 0x303F),  # CJK symbols and punctuation
    (0x3040, 0x30FF),  # Hiragana, Katakana
    (0x3100, 0x31FF),  # Bopomofo, Hangul compatibility jamo, Katakana ext.
    (0x3400, 0x4DBF),  # CJK extension A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xA960, 0xA97F),  # Hangul jamo ext. A
    (0xAC00, 0xD7FF),  # Hangul syllables, jamo ext. B
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0xFF66, 0xFFDC),  # half-width Katakana, Hangul
    (0x20000, 0x3FFFF),  # CJK extensions B and later
)

_ASCII_WORD = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


def is_no_space_script(ch: str) -> bool:
    """True for scripts written without spaces between words (CJK, Thai, …)."""
    cp = ord(ch)
    for lo, hi in _NO_SPACE_RANGES:
        if cp < lo:
            return False
        if cp <= hi:
            return True
    return False


def is_word_char(ch: str) -> bool:
    """A character that extends a word for whole-word matching (CJK never does)."""
    if ch < "\x80":
        return ch in _ASCII_WORD
    return (ch.isalnum() or unicodedata.category(ch) in ("Mn", "Mc")) and not is_no_space_script(ch)

"""Built-in detectors for personal data, each validated so that look-alikes do not match.

A detector returns `(start, end, score)` findings in the original text. The score is the
detector's confidence; context words near a finding raise it (see `score_with_context`).
"""

from __future__ import annotations

import re
from collections.abc import Callable

Finding = tuple[int, int, float]

CONTEXT_WINDOW = 50
"""Characters on each side of a finding searched for context words."""

CONTEXT_BOOST = 0.3

BASE_SCORES: dict[str, float] = {
    "credit_card": 0.8,
    "iban": 0.9,
    "us_ssn": 0.6,
    "email": 0.8,
    "phone": 0.4,
}
"""Score of a validated finding without context (bare 9-digit SSNs score 0.3)."""

IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27,
    "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27,
    "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22,
    "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32,
    "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24,
    "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31,
    "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28, "TL": 23,
    "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}
"""IBAN length per country (SWIFT IBAN registry)."""

_BODY_BY_LENGTH = {n: re.compile(rf"(?: ?[A-Za-z0-9]){{{n - 4}}}") for n in set(IBAN_LENGTHS.values())}

_DIGIT_RUN = re.compile(r"[0-9]+(?:[ -][0-9]+)*")
_IBAN_CHECK_DIGITS = re.compile(r"[0-9]{2}(?<=[A-Za-z]{2}[0-9]{2})")
_IBAN_BODIES = {country: _BODY_BY_LENGTH[length] for country, length in IBAN_LENGTHS.items()}
"""Per country: the BBAN after the check digits, exactly as long as the registry says."""
_SSN = re.compile(r"([0-9]{3})([- ]?)([0-9]{2})\2([0-9]{4})(?![0-9-])")
_EMAIL = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9_%+-][A-Za-z0-9._%+-]*@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w-])"
)
_PHONE = re.compile(r"(?<![\w+])(?:\+|00)?\(?[0-9][0-9 ().-]{5,24}[0-9](?![\w])")
_THOUSANDS = re.compile(r"[0-9]{1,3}(?:[.,][0-9]{3})+")
_DIGITS = str.maketrans("", "", " -().")

def _is_alnum(ch: str) -> bool:
    return ch.isascii() and ch.isalnum()


def digit_count(text: str) -> int:
    """ASCII digits in `text` (UTF-8 continuation bytes are never ASCII digits)."""
    raw = text.encode("utf-8", "surrogatepass")
    return len(raw) - len(raw.translate(None, b"0123456789"))


_LUHN_DOUBLED = bytes.maketrans(b"0123456789", bytes([0, 2, 4, 6, 8, 1, 3, 5, 7, 9]))
_IBAN_LETTERS = str.maketrans({chr(c): str(c - 55) for c in range(ord("A"), ord("Z") + 1)})


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) check used by payment card numbers."""
    raw = digits.encode("ascii")
    odd = raw[-1::-2]
    return (sum(odd) - 48 * len(odd) + sum(raw[-2::-2].translate(_LUHN_DOUBLED))) % 10 == 0


def iban_valid(iban: str) -> bool:
    """Country length and ISO 13616 mod-97 check of a compact, upper-case IBAN."""
    if IBAN_LENGTHS.get(iban[:2]) != len(iban) or not iban[2:4].isdigit() or not iban.isalnum():
        return False
    number = (iban[4:] + iban[:4]).translate(_IBAN_LETTERS)
    return number.isdigit() and int(number) % 97 == 1


def ssn_valid(area: str, group: str, serial: str) -> bool:
    """SSA rules: no area 000, 666 or 900-999; no group 00; no serial 0000."""
    return area != "000" and area != "666" and area[0] != "9" and group != "00" and serial != "0000"


def find_credit_cards(text: str) -> list[Finding]:
    """13-19 digit runs (single spaces or dashes between groups) that pass Luhn.

    A run glued to letters (`DE89 3704…`, `ID4111…`) is not a card. A run of more than 19
    digits is checked group by group from its start, so `<card> 0927 123` is still found; a
    run of 13-19 digits is judged whole (a changed digit must never turn into a shorter match).
    """
    found: list[Finding] = []
    n = len(text)
    for m in _DIGIT_RUN.finditer(text):
        start, end = m.span()
        if (start and _is_alnum(text[start - 1])) or (end < n and _is_alnum(text[end])):
            continue
        run = m.group()
        digits = run.replace(" ", "").replace("-", "")
        if len(digits) < 13:
            continue
        if len(digits) <= 19:
            if digits.strip("0") and luhn_valid(digits):
                found.append((start, end, BASE_SCORES["credit_card"]))
            continue
        if len(run) == len(digits):
            continue
        prefix = ""
        offset = 0
        for group in re.split("[ -]", run):
            prefix += group
            offset += len(group) + (1 if offset else 0)
            if len(prefix) > 19:
                break
            if len(prefix) >= 13 and prefix.strip("0") and luhn_valid(prefix):
                found.append((start, start + offset, BASE_SCORES["credit_card"]))
                break
    return found


def find_ibans(text: str) -> list[Finding]:
    found: list[Finding] = []
    n = len(text)
    for hint in _IBAN_CHECK_DIGITS.finditer(text):
        begin = hint.start() - 2
        if begin and _is_alnum(text[begin - 1]):
            continue
        country = text[begin : begin + 2].upper()
        body = _IBAN_BODIES.get(country)
        if body is None:
            continue
        m = body.match(text, hint.end())
        if m is None:
            continue
        end = m.end()
        if end < n and _is_alnum(text[end]):
            continue
        compact = (country + hint.group() + m.group().replace(" ", "")).upper()
        if iban_valid(compact):
            found.append((begin, end, BASE_SCORES["iban"]))
    return found


def find_us_ssns(text: str) -> list[Finding]:
    found: list[Finding] = []
    for m in _SSN.finditer(text):
        if m.start() and text[m.start() - 1] in "0123456789-":
            continue
        area, sep, group, serial = m.groups()
        if ssn_valid(area, group, serial):
            found.append((m.start(), m.end(), BASE_SCORES["us_ssn"] if sep else 0.3))
    return found


def find_emails(text: str) -> list[Finding]:
    if "@" not in text:
        return []
    return [(m.start(), m.end(), BASE_SCORES["email"]) for m in _EMAIL.finditer(text)]


def find_phones(text: str) -> list[Finding]:
    found: list[Finding] = []
    for m in _PHONE.finditer(text):
        raw = m.group()
        if raw.count("(") != raw.count(")") or _THOUSANDS.fullmatch(raw):
            continue
        international = raw.startswith(("+", "00"))
        digits = raw.translate(_DIGITS).lstrip("+")
        if international and raw.startswith("00"):
            digits = digits[2:]
        if not digits.isdigit():
            continue
        low = 8 if international else 10
        if low <= len(digits) <= 15:
            found.append((m.start(), m.end(), BASE_SCORES["phone"]))
    return found


DETECTORS: dict[str, tuple[int, Callable[[str], list[Finding]]]] = {
    "credit_card": (13, find_credit_cards),
    "iban": (2, find_ibans),
    "us_ssn": (9, find_us_ssns),
    "email": (0, find_emails),
    "phone": (8, find_phones),
}
"""Name → (fewest ASCII digits a finding needs, finder); the count gates the regex scan."""


def context_pattern(words: list[str]) -> re.Pattern[str]:
    """Whole-word, case-insensitive alternation of context words."""
    alternation = "|".join(re.escape(w.strip()) for w in sorted(set(words), key=len, reverse=True))
    return re.compile(rf"(?<!\w)(?:{alternation})(?!\w)", re.IGNORECASE)


def score_with_context(text: str, finding: Finding, context: re.Pattern[str] | None) -> float:
    """A finding's score, raised when a context word occurs near it."""
    start, end, score = finding
    if context is None:
        return score
    before = context.search(text, max(0, start - CONTEXT_WINDOW), start)
    if before is None and context.search(text, end, min(len(text), end + CONTEXT_WINDOW)) is None:
        return score
    return min(1.0, score + CONTEXT_BOOST)

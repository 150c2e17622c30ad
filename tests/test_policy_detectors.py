"""Detectors: validation rules (Luhn, mod-97, SSA ranges), formats, context scoring."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from relay.policy.detectors import (
    IBAN_LENGTHS,
    context_pattern,
    find_credit_cards,
    find_emails,
    find_ibans,
    find_phones,
    find_us_ssns,
    iban_valid,
    luhn_valid,
    score_with_context,
)
from tests.policy_support import evaluate, load_rules, spans_text


def found(finder, text: str) -> list[str]:
    return [text[s:e] for s, e, _ in finder(text)]


def luhn_complete(payload: str) -> str:
    """`payload` plus the Luhn check digit that makes it valid."""
    for check in "0123456789":
        if luhn_valid(payload + check):
            return payload + check
    raise AssertionError("no check digit")


def iban_with_check(country: str, bban: str) -> str:
    number = int((bban + country + "00").translate(str.maketrans({chr(c): str(c - 55) for c in range(65, 91)})))
    return f"{country}{98 - number % 97:02d}{bban}"


# --- credit cards -------------------------------------------------------------------------

def test_credit_card_formats() -> None:
    assert found(find_credit_cards, "card 4111 1111 1111 1111 ok") == ["4111 1111 1111 1111"]
    assert found(find_credit_cards, "4111-1111-1111-1111") == ["4111-1111-1111-1111"]
    assert found(find_credit_cards, "card:4111111111111111.") == ["4111111111111111"]
    assert found(find_credit_cards, "x4111111111111111y") == []  # glued to letters: an identifier
    assert found(find_credit_cards, "amex 3782 822463 10005") == ["3782 822463 10005"]


def test_credit_card_rejects_bad_luhn_and_lengths() -> None:
    assert found(find_credit_cards, "4111 1111 1111 1112") == []
    twelve = luhn_complete("41111111111")
    assert len(twelve) == 12 and found(find_credit_cards, twelve) == []
    twenty = luhn_complete("4111111111111111111")
    assert len(twenty) == 20 and found(find_credit_cards, twenty) == []
    assert found(find_credit_cards, "0000 0000 0000 0000") == []
    assert found(find_credit_cards, "4111  1111 1111 1111") == []  # two separators in a row


def test_credit_card_lengths_13_to_19() -> None:
    for length in range(13, 20):
        number = luhn_complete("4" + "2" * (length - 2))
        assert found(find_credit_cards, f"n {number} n") == [number]


@settings(max_examples=150, deadline=None)
@given(
    payload=st.text(alphabet="0123456789", min_size=12, max_size=18).filter(lambda s: s[0] != "0"),
    sep=st.sampled_from(["", " ", "-"]),
    position=st.integers(min_value=0, max_value=18),
    delta=st.integers(min_value=1, max_value=9),
)
def test_luhn_property(payload: str, sep: str, position: int, delta: int) -> None:
    number = luhn_complete(payload)
    groups = [number[i : i + 4] for i in range(0, len(number), 4)]
    text = f"pay with {sep.join(groups)} today"
    assert len(find_credit_cards(text)) == 1
    i = position % len(number)
    changed = number[:i] + str((int(number[i]) + delta) % 10) + number[i + 1 :]
    groups = [changed[j : j + 4] for j in range(0, len(changed), 4)]
    assert find_credit_cards(f"pay with {sep.join(groups)} today") == []


# --- IBAN ---------------------------------------------------------------------------------

def test_iban_examples() -> None:
    assert found(find_ibans, "to DE89 3704 0044 0532 0130 00 please") == ["DE89 3704 0044 0532 0130 00"]
    assert found(find_ibans, "GB82WEST12345698765432") == ["GB82WEST12345698765432"]
    assert found(find_ibans, "fr14 2004 1010 0505 0001 3m02 606") == ["fr14 2004 1010 0505 0001 3m02 606"]
    assert found(find_ibans, "NO9386011117947.") == ["NO9386011117947"]


def test_iban_rejects() -> None:
    assert found(find_ibans, "DE89 3704 0044 0532 0130 01") == []  # check digits
    assert found(find_ibans, "DE89370400440532013000X") == []  # runs on into a word
    assert found(find_ibans, "GB82 WEST 1234 5698 7654") == []  # too short for GB
    assert found(find_ibans, "ZZ89370400440532013000") == []  # unknown country
    assert not iban_valid("DE8937040044053201300")


@settings(max_examples=150, deadline=None)
@given(
    country=st.sampled_from(sorted(IBAN_LENGTHS)),
    digits=st.text(alphabet="0123456789", min_size=40, max_size=40),
    spaced=st.booleans(),
    wrong=st.integers(min_value=0, max_value=99),
)
def test_iban_property(country: str, digits: str, spaced: bool, wrong: int) -> None:
    iban = iban_with_check(country, digits[: IBAN_LENGTHS[country] - 4])
    show = " ".join(iban[i : i + 4] for i in range(0, len(iban), 4)) if spaced else iban
    assert found(find_ibans, f"wire to {show} now") == [show]
    check = int(iban[2:4])
    if wrong % 97 == check % 97:  # mod-97 cannot tell 02 from 99; any other value must fail
        wrong = (wrong + 1) % 100
    corrupt = f"{iban[:2]}{wrong:02d}{iban[4:]}"
    assert find_ibans(f"wire to {corrupt} now") == []


# --- US SSN -------------------------------------------------------------------------------

def test_ssn_valid_forms() -> None:
    assert found(find_us_ssns, "ssn 123-45-6789.") == ["123-45-6789"]
    assert found(find_us_ssns, "ssn 123 45 6789") == ["123 45 6789"]
    assert found(find_us_ssns, "ssn 123456789") == ["123456789"]


def test_ssn_invalid_ranges() -> None:
    for bad in ("000-12-3456", "666-12-3456", "900-12-3456", "999-12-3456", "123-00-4567", "123-45-0000"):
        assert found(find_us_ssns, f"ssn {bad}") == [], bad
    assert found(find_us_ssns, "123-45 6789") == []  # mixed separators
    assert found(find_us_ssns, "1123-45-6789") == []
    assert found(find_us_ssns, "123-45-67890") == []


def test_bare_ssn_scores_lower_than_dashed() -> None:
    assert find_us_ssns("123456789")[0][2] < find_us_ssns("123-45-6789")[0][2]


# --- email, phone -------------------------------------------------------------------------

def test_email() -> None:
    assert found(find_emails, "write to Jane.Doe+x@mail.example.co.uk, thanks") == ["Jane.Doe+x@mail.example.co.uk"]
    assert found(find_emails, "not@an-address") == []
    assert found(find_emails, "no at sign here") == []


def test_phone() -> None:
    assert found(find_phones, "call +44 20 7946 0958 now") == ["+44 20 7946 0958"]
    assert found(find_phones, "call (415) 555-2671 now") == ["(415) 555-2671"]
    assert found(find_phones, "call 0044 20 7946 0958") == ["0044 20 7946 0958"]
    assert found(find_phones, "room 555-0100") == []  # 7 digits without a country code
    assert found(find_phones, "price 1.000.000.000") == []
    assert found(find_phones, "+1 234 567 890 123 456 7") == []  # too many digits


# --- context words and min_score ----------------------------------------------------------

def test_context_raises_score() -> None:
    pattern = context_pattern(["ssn", "social security"])
    text = "my social security number is 123-45-6789"
    finding = find_us_ssns(text)[0]
    assert score_with_context(text, finding, pattern) > finding[2]
    far = "ssn" + " " * 80 + "123-45-6789"
    assert score_with_context(far, find_us_ssns(far)[0], pattern) == find_us_ssns(far)[0][2]
    assert score_with_context("my ssnx 123-45-6789", find_us_ssns("my ssnx 123-45-6789")[0], pattern) == 0.6


def test_detector_leaf_min_score_with_context(tmp_path: Path) -> None:
    ps = load_rules(
        tmp_path,
        """
        - id: SSN
          match: {detector: us_ssn, context: [ssn, social security], min_score: 0.8}
          action: redact
        """,
    )
    assert evaluate(ps, "ticket 123-45-6789").action == "allow"
    text = "my SSN: 123-45-6789"
    verdict = evaluate(ps, text)
    assert verdict.action == "redact" and spans_text(text, verdict, "SSN") == ["123-45-6789"]


def test_detector_leaf_each_detector(tmp_path: Path) -> None:
    ps = load_rules(
        tmp_path,
        """
        - {id: CC, match: {detector: credit_card}, action: redact}
        - {id: IBAN, match: {detector: iban}, action: redact}
        - {id: SSN, match: {detector: us_ssn}, action: redact}
        - {id: MAIL, match: {detector: email}, action: flag}
        - {id: PHONE, match: {detector: phone}, action: flag}
        """,
    )
    text = "a@b.example 4111111111111111 DE89370400440532013000 123-45-6789 +1 415 555 2671"
    assert set(evaluate(ps, text).rules) == {"CC", "IBAN", "SSN", "MAIL", "PHONE"}
    assert evaluate(ps, "nothing sensitive, order 12345").rules == ()


def test_credit_card_followed_by_expiry_or_cvv() -> None:
    assert found(find_credit_cards, "4111 1111 1111 1111 0927 123") == ["4111 1111 1111 1111"]
    assert found(find_credit_cards, "4111111111111111 0927 123") == ["4111111111111111"]
    assert found(find_credit_cards, "DE89 3704 0044 0532 0130 00") == []  # IBAN digits are not a card

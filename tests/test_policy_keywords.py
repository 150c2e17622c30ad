"""Keyword matching: folding (NFKC, case, width, spaces), whole words, CJK, original spans."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from relay.policy.keywords import KeywordIndexBuilder
from relay.policy.normalize import _fold_mapped, fold_term, fold_text
from tests.policy_support import evaluate, load_rules, spans_text, write


def index_of(*terms: str):
    builder = KeywordIndexBuilder()
    leaf = builder.add_leaf([fold_term(t) for t in terms])
    return builder.build(), leaf


def matches(text: str, *terms: str) -> list[str]:
    index, leaf = index_of(*terms)
    return [text[s:e] for s, e in index.scan(fold_text(text)).get(leaf, [])]


def test_fold_term() -> None:
    assert fold_term("  Guaranteed \t Return ") == "guaranteed return"
    assert fold_term("ＩＮＳＩＤＥＲ") == "insider"
    assert fold_term("Straße") == "strasse"
    assert fold_term("don’t") == "don't"


def test_fold_text_fast_paths_agree_with_mapped_fold() -> None:
    for text in ["plain ascii", "Tabs\tand\nnewlines", "double  space", "内幕消息，明天", "Ｆｕｌｌ width", "café", "cafe\u0301",
                 "in\u200bsider", "ﬁnance", "ß", "x\u00a0\u00a0y", "İstanbul"]:
        fast, slow = fold_text(text), _fold_mapped(text)
        assert fast.text == slow.text, text


def test_whole_word_only() -> None:
    assert matches("an insider said", "insider") == ["insider"]
    assert matches("the insiders club", "insider") == []
    assert matches("outsider", "insider") == []
    assert matches("insider's view", "insider") == ["insider"]
    assert matches("(insider)", "insider") == ["insider"]
    assert matches("insider_x", "insider") == []


def test_case_width_and_space_variants() -> None:
    text = "A GUARANTEED   return and ｇｕａｒａｎｔｅｅｄ\nReturn"
    assert matches(text, "guaranteed return") == ["GUARANTEED   return", "ｇｕａｒａｎｔｅｅｄ\nReturn"]


def test_typographic_quotes_and_invisible_characters() -> None:
    assert matches("please don’t tell compliance", "don't tell compliance") == ["don’t tell compliance"]
    assert matches("an in\u200bsider", "insider") == ["in\u200bsider"]


def test_combining_marks_map_to_whole_character() -> None:
    text = "the cafe\u0301 is open"
    assert matches(text, "café") == ["cafe\u0301"]


def test_cjk_needs_no_word_boundary() -> None:
    assert matches("我有内幕消息，明天买入", "内幕消息") == ["内幕消息"]
    assert matches("内幕消息", "内幕消息") == ["内幕消息"]
    assert matches("abc内幕消息def", "内幕消息") == ["内幕消息"]
    assert matches("インサイダー情報です", "インサイダー") == ["インサイダー"]


def test_latin_term_next_to_cjk_is_a_whole_word() -> None:
    assert matches("这是insider消息", "insider") == ["insider"]


def test_overlapping_terms_all_reported() -> None:
    assert sorted(matches("insider information leaked", "insider", "insider information")) == [
        "insider",
        "insider information",
    ]


def test_one_automaton_serves_many_leaves() -> None:
    builder = KeywordIndexBuilder()
    a = builder.add_leaf(["alpha", "shared"])
    b = builder.add_leaf(["beta", "shared"])
    index = builder.build()
    hits = index.scan(fold_text("alpha and shared"))
    assert set(hits) == {a, b}
    assert hits[b] == [(10, 16)]


def test_list_and_lexicon_leaves(tmp_path: Path) -> None:
    write(tmp_path, "lexicons/words.txt", "# comment\n\nFront Run\nspoofing\n")
    ps = load_rules(
        tmp_path,
        """
        - {id: L, match: {keywords: {list: mnpi}}, action: flag}
        - {id: X, match: {keywords: {lexicon: words}}, action: flag}
        - {id: I, match: {keywords: [wash trade]}, action: flag}
        """,
        lists="mnpi: [insider, before the announcement]",
    )
    text = "Insider says front  run it before the announcement, no wash trades, spoofing"
    verdict = evaluate(ps, text)
    assert spans_text(text, verdict, "L") == ["Insider", "before the announcement"]
    assert spans_text(text, verdict, "X") == ["front  run", "spoofing"]
    assert "I" not in verdict.rules


_WORDS = st.text(alphabet="abcdefghij ", min_size=0, max_size=30)


def _variant(term: str, draw_choice: list[int]) -> str:
    """Upper-case, full-width or keep each character according to `draw_choice`."""
    out = []
    for ch, choice in zip(term, draw_choice):
        if ch == " ":
            out.append([" ", "  ", "\t", "\u00a0"][choice % 4])
        elif choice % 3 == 1:
            out.append(ch.upper())
        elif choice % 3 == 2:
            out.append(chr(ord(ch) + 0xFEE0))
        else:
            out.append(ch)
    return "".join(out)


@settings(max_examples=200, deadline=None)
@given(
    before=_WORDS,
    after=_WORDS,
    term=st.sampled_from(["insider", "guaranteed return", "front run", "keep this between us"]),
    choices=st.lists(st.integers(min_value=0, max_value=11), min_size=25, max_size=25),
)
def test_variants_match_and_spans_map_to_original(before: str, after: str, term: str, choices: list[int]) -> None:
    written = _variant(term, choices)
    text = f"{before} {written} {after}"
    found = matches(text, term)
    assert written in found
    for piece in found:
        assert fold_term(piece) == term


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_fold_offsets_are_consistent(text: str) -> None:
    folded = fold_text(text)
    assert folded.text == _fold_mapped(text).text
    if folded.starts is None:
        assert len(folded.text) == len(text)
        return
    assert len(folded.starts) == len(folded.ends) == len(folded.text)
    assert all(0 <= s < e <= len(text) for s, e in zip(folded.starts, folded.ends))
    assert folded.starts == sorted(folded.starts)

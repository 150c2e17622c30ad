"""Evaluation semantics: precedence, stop, priority, sampling, unless, scope, trees, leaves."""

from __future__ import annotations

from pathlib import Path

from relay.model import Attachment, Span, Verdict
from relay.policy import apply_verdict, load_policy_dir
from tests.policy_support import evaluate, load_rules, policy_file, spans_text

ROOT = Path(__file__).resolve().parents[1]


def test_precedence_block_over_quarantine_over_redact_over_flag(tmp_path: Path) -> None:
    ps = load_rules(
        tmp_path,
        """
        - {id: F, match: {keywords: [alpha]}, action: flag}
        - {id: R, match: {keywords: [beta]}, action: redact}
        - {id: Q, match: {keywords: [gamma]}, action: quarantine}
        - {id: B, match: {keywords: [delta]}, action: block}
        - {id: A, match: {keywords: [epsilon]}, action: allow}
        """,
    )
    assert evaluate(ps, "alpha").action == "flag"
    assert evaluate(ps, "alpha beta").action == "redact"
    assert evaluate(ps, "gamma beta alpha").action == "quarantine"
    assert evaluate(ps, "alpha beta gamma delta").action == "block"
    assert evaluate(ps, "epsilon").action == "allow"
    assert evaluate(ps, "epsilon").rules == ("A",)
    full = evaluate(ps, "delta gamma beta alpha")
    assert full.rules == ("F", "R", "Q", "B")


def test_review_flag_quarantine_not_block_or_redact(tmp_path: Path) -> None:
    ps = load_rules(
        tmp_path,
        """
        - {id: F, match: {keywords: [alpha]}, action: flag}
        - {id: R, match: {keywords: [beta]}, action: redact}
        - {id: Q, match: {keywords: [gamma]}, action: quarantine}
        - {id: B, match: {keywords: [delta]}, action: block}
        """,
    )
    assert evaluate(ps, "alpha").review is True
    assert evaluate(ps, "gamma").review is True
    assert evaluate(ps, "beta").review is False
    assert evaluate(ps, "delta").review is False
    assert evaluate(ps, "nothing").review is False


def test_redactions_accumulate_and_merge(tmp_path: Path) -> None:
    ps = load_rules(
        tmp_path,
        """
        - {id: R1, match: {keywords: [secret]}, action: redact}
        - {id: R2, match: {regex: "code [0-9]+"}, action: redact}
        - {id: F, match: {keywords: [plan]}, action: flag}
        """,
    )
    text = "secret code 42 and the plan, secret"
    verdict = evaluate(ps, text)
    assert verdict.action == "redact"
    assert verdict.redactions == (Span(0, 6), Span(7, 14), Span(29, 35))
    assert apply_verdict(text, verdict) == "[REDACTED] [REDACTED] and the plan, [REDACTED]"


def test_overlapping_redactions_merge_into_one(tmp_path: Path) -> None:
    ps = load_rules(
        tmp_path,
        """
        - {id: R1, match: {keywords: [top secret]}, action: redact}
        - {id: R2, match: {keywords: [secret plan]}, action: redact}
        """,
    )
    text = "the top secret plan is here"
    verdict = evaluate(ps, text)
    assert verdict.redactions == (Span(4, 19),)
    assert apply_verdict(text, verdict) == "the [REDACTED] is here"


def test_disclaimers_accumulate_without_changing_action(tmp_path: Path) -> None:
    ps = load_rules(
        tmp_path,
        """
        - {id: D1, action: disclaimer, text: "Recorded."}
        - {id: D2, match: {keywords: [invest]}, action: disclaimer, text: "Not advice."}
        - {id: D3, action: disclaimer, text: "Recorded."}
        - {id: F, match: {keywords: [invest]}, action: flag}
        """,
    )
    verdict = evaluate(ps, "hello")
    assert verdict.action == "allow" and verdict.disclaimers == ("Recorded.",)
    verdict = evaluate(ps, "invest now")
    assert verdict.action == "flag"
    assert verdict.disclaimers == ("Recorded.", "Not advice.")
    assert apply_verdict("invest now", verdict) == "Recorded.\nNot advice.\ninvest now"
    assert apply_verdict("", verdict) == "Recorded.\nNot advice."


def test_stop_ends_evaluation(tmp_path: Path) -> None:
    ps = load_rules(
        tmp_path,
        """
        - {id: OK, match: {sender_group: compliance}, action: allow, stop: true}
        - {id: B, match: {keywords: [delta]}, action: block}
        """,
    )
    assert evaluate(ps, "delta", groups=("compliance",)).rules == ("OK",)
    assert evaluate(ps, "delta", groups=("compliance",)).action == "allow"
    assert evaluate(ps, "delta", groups=("sales",)).action == "block"


def test_stop_only_when_the_rule_matched(tmp_path: Path) -> None:
    ps = load_rules(
        tmp_path,
        """
        - {id: S, match: {keywords: [never]}, action: flag, stop: true}
        - {id: B, match: {keywords: [delta]}, action: block}
        """,
    )
    assert evaluate(ps, "delta").action == "block"


def test_priority_orders_rules_across_files(tmp_path: Path) -> None:
    policy_file(tmp_path, "a.yaml", "- {id: A-BLOCK, match: {keywords: [delta]}, action: block}")
    policy_file(
        tmp_path, "z.yaml", "- {id: Z-ALLOW, match: {keywords: [delta]}, action: allow, stop: true, priority: 10}"
    )
    ps = load_policy_dir(tmp_path)
    assert [r.id for r in ps.rules] == ["Z-ALLOW", "A-BLOCK"]
    assert evaluate(ps, "delta").rules == ("Z-ALLOW",)


def test_files_in_sorted_order_rules_in_file_order(tmp_path: Path) -> None:
    policy_file(tmp_path, "b.yaml", "- {id: B1, action: flag}\n- {id: B2, action: flag}")
    policy_file(tmp_path, "a.yaml", "- {id: A2, action: flag}\n- {id: A1, action: flag}")
    ps = load_policy_dir(tmp_path)
    assert evaluate(ps, "x").rules == ("A2", "A1", "B1", "B2")


def test_sampling_is_deterministic_and_proportional(tmp_path: Path) -> None:
    ps = load_rules(tmp_path, "- {id: S, match: {keywords: [bond]}, action: allow, sample: 10%}")
    results = [evaluate(ps, "bond", message_id=f"m-{i}") for i in range(2000)]
    sampled = [v for v in results if v.matched[0].sampled]
    assert 120 <= len(sampled) <= 280
    assert all(v.review for v in sampled)
    assert all(not v.review for v in results if not v.matched[0].sampled)
    assert all(v.action == "allow" for v in results)
    again = [evaluate(ps, "bond", message_id=f"m-{i}").matched[0].sampled for i in range(2000)]
    assert again == [v.matched[0].sampled for v in results]


def test_sampling_depends_on_rule_id(tmp_path: Path) -> None:
    ps = load_rules(
        tmp_path,
        """
        - {id: S1, match: {keywords: [bond]}, action: allow, sample: 50%}
        - {id: S2, match: {keywords: [bond]}, action: allow, sample: 50%}
        """,
    )
    pairs = [tuple(h.sampled for h in evaluate(ps, "bond", message_id=f"m-{i}").matched) for i in range(200)]
    assert any(a != b for a, b in pairs)


def test_unless_cancels_the_rule(tmp_path: Path) -> None:
    ps = load_rules(
        tmp_path,
        """
        - id: CC
          match: {detector: credit_card}
          unless: [{sender_group: payments-ops}, {all: [{channel: "staff-*"}, {keywords: [test card]}]}]
          action: redact
        """,
    )
    text = "4111 1111 1111 1111"
    assert evaluate(ps, text).action == "redact"
    assert evaluate(ps, text, groups=("payments-ops",)).action == "allow"
    assert evaluate(ps, f"test card {text}", channel="staff-desk").action == "allow"
    assert evaluate(ps, f"test card {text}", channel="webchat").action == "redact"


def test_scope_direction_and_channels(tmp_path: Path) -> None:
    ps = load_rules(
        tmp_path,
        """
        - {id: OUT, scope: {direction: outbound}, match: {keywords: [x]}, action: flag}
        - {id: TG, scope: {direction: [inbound], channels: ["telegram-*", webchat]}, match: {keywords: [x]}, action: flag}
        """,
    )
    assert evaluate(ps, "x", direction="outbound", channel="telegram-clients").rules == ("OUT",)
    assert evaluate(ps, "x", direction="inbound", channel="telegram-clients").rules == ("TG",)
    assert evaluate(ps, "x", direction="inbound", channel="webchat").rules == ("TG",)
    assert evaluate(ps, "x", direction="inbound", channel="xmpp").rules == ()


def test_first_in_conversation(tmp_path: Path) -> None:
    ps = load_rules(
        tmp_path,
        """
        - id: REC
          scope: {direction: [outbound], first_in_conversation: true}
          action: disclaimer
          text: "This conversation is recorded."
        """,
    )
    assert evaluate(ps, "hi", direction="outbound", first=True).disclaimers == ("This conversation is recorded.",)
    assert evaluate(ps, "hi", direction="outbound", first=False).disclaimers == ()
    assert evaluate(ps, "hi", direction="inbound", first=True).disclaimers == ()


def test_trees_all_any_not(tmp_path: Path) -> None:
    ps = load_rules(
        tmp_path,
        """
        - id: T
          match:
            all:
              - {any: [{keywords: [buy]}, {keywords: [sell]}]}
              - {not: {keywords: [paper]}}
              - {regex: "[0-9]+ shares"}
          action: flag
        """,
    )
    text = "buy 100 shares now"
    verdict = evaluate(ps, text)
    assert verdict.action == "flag" and spans_text(text, verdict, "T") == ["buy", "100 shares"]
    assert evaluate(ps, "sell 5 shares").action == "flag"
    assert evaluate(ps, "paper trade: buy 100 shares").action == "allow"
    assert evaluate(ps, "buy shares").action == "allow"


def test_regex_leaf_is_re2(tmp_path: Path) -> None:
    ps = load_rules(
        tmp_path,
        """
        - {id: RX1, match: {regex: "(?i)acct[- ]?[0-9]{6}"}, action: redact}
        - {id: RX2, match: {regex: "(a+)+$"}, action: flag}
        """,
    )
    text = "see ACCT-123456 and Acct 654321"
    verdict = evaluate(ps, text)
    assert spans_text(text, verdict, "RX1") == ["ACCT-123456", "Acct 654321"]
    assert evaluate(ps, "a" * 5000 + "b").rules == ()  # linear time, no catastrophic backtracking
    assert evaluate(ps, "内幕 acct 123456 ok").redactions == (Span(3, 14),)  # char offsets, not bytes


def test_attachment_leaf(tmp_path: Path) -> None:
    ps = load_rules(
        tmp_path,
        """
        - {id: MIME, match: {attachment: {mime: "application/x-*"}}, action: block}
        - {id: EXT, match: {attachment: {ext: [exe, .BAT]}}, action: block}
        - {id: BIG, match: {attachment: {size_gt: 25MB}}, action: block}
        - {id: BIGI, match: {attachment: {size_gt: 1KiB}}, action: flag}
        - {id: BOTH, match: {attachment: {mime: "image/*", size_gt: 100}}, action: flag}
        - {id: NAME, match: {attachment: {name: "invoice*.pdf"}}, action: flag}
        """,
    )

    def rules(*atts: Attachment) -> tuple[str, ...]:
        return evaluate(ps, "", attachments=atts).rules

    assert rules(Attachment("a.bin", "application/x-msdownload", 10)) == ("MIME",)
    assert rules(Attachment("SETUP.EXE", "application/octet-stream", 10)) == ("EXT",)
    assert rules(Attachment("run.bat", "text/plain", 10)) == ("EXT",)
    assert rules(Attachment("v.mp4", "video/mp4", 25_000_001)) == ("BIG", "BIGI")
    assert rules(Attachment("v.mp4", "video/mp4", 25_000_000)) == ("BIGI",)
    assert rules(Attachment("v.mp4", "video/mp4", 1024)) == ()
    assert rules(Attachment("p.png", "image/png", 101)) == ("BOTH",)
    assert rules(Attachment("p.png", "image/png", 99), Attachment("d.txt", "text/plain", 500)) == ()
    assert rules(Attachment("Invoice-7.PDF", "application/pdf", 10)) == ("NAME",)
    assert rules() == ()


def test_sender_group_and_channel_leaves(tmp_path: Path) -> None:
    ps = load_rules(
        tmp_path,
        """
        - {id: G, match: {sender_group: [traders, sales]}, action: flag}
        - {id: C, match: {channel: "wechat*"}, action: flag}
        """,
    )
    assert evaluate(ps, "x", groups=("advisors", "sales")).rules == ("G",)
    assert evaluate(ps, "x", groups=("advisors",)).rules == ()
    assert evaluate(ps, "x", channel="wechat-cn").rules == ("C",)


def test_rule_hit_carries_metadata(tmp_path: Path) -> None:
    ps = load_rules(
        tmp_path,
        "- {id: K, title: Keyword, severity: critical, match: {keywords: [alpha]}, action: quarantine}",
    )
    verdict = evaluate(ps, "x alpha")
    hit = verdict.matched[0]
    assert (hit.rule, hit.policy, hit.action, hit.severity, hit.title) == ("K", "p", "quarantine", "critical", "Keyword")
    assert hit.spans == (Span(2, 7),)
    assert verdict.policy_version == ps.version


def test_no_match_gives_allow_verdict(tmp_path: Path) -> None:
    ps = load_rules(tmp_path, "- {id: K, match: {keywords: [alpha]}, action: block}")
    verdict = evaluate(ps, "nothing here")
    assert verdict == Verdict(action="allow", policy_version=ps.version)


def test_apply_verdict_clips_spans_and_keeps_text_without_effects() -> None:
    assert apply_verdict("hello", Verdict()) == "hello"
    verdict = Verdict(action="redact", redactions=(Span(3, 99), Span(0, 2)))
    assert apply_verdict("abcdef", verdict) == "[REDACTED]c[REDACTED]"


def test_shipped_policies_end_to_end() -> None:
    ps = load_policy_dir(ROOT / "policies")
    text = "Hi! card 4111 1111 1111 1111, an insider tip: text me on WhatsApp"
    verdict = evaluate(ps, text, direction="outbound", first=True)
    assert verdict.action == "quarantine" and verdict.review
    assert {"PII-001", "MC-002", "MC-003", "REC-001"} <= set(verdict.rules)
    out = apply_verdict(text, verdict)
    assert out.startswith("This conversation is recorded for regulatory purposes.\n")
    assert "4111" not in out and "[REDACTED]" in out
    blocked = evaluate(ps, "", attachments=(Attachment("x.msi", "application/x-msi", 10),))
    assert blocked.action == "block"
    assert evaluate(ps, "我有内幕消息").rules == ("MC-004",)


def test_evaluate_is_thread_safe(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    ps = load_policy_dir(ROOT / "policies")
    texts = [f"msg {i}: " + ("card 4111 1111 1111 1111" if i % 3 == 0 else "an insider" if i % 3 == 1 else "hello")
             for i in range(300)]
    expected = [evaluate(ps, t, message_id=str(i)) for i, t in enumerate(texts)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        got = list(pool.map(lambda it: evaluate(ps, it[1], message_id=str(it[0])), enumerate(texts)))
    assert got == expected
    assert {v.action for v in got} == {"redact", "quarantine", "allow"}


def test_lone_surrogates_do_not_break_evaluation() -> None:
    ps = load_policy_dir(ROOT / "policies")
    text = "\ud800 signal me, card 4111 1111 1111 1111 \udfff"
    verdict = evaluate(ps, text)
    assert verdict.action == "quarantine" and {"MC-003", "PII-001"} <= set(verdict.rules)
    assert apply_verdict(text, verdict) == "\ud800 signal me, card [REDACTED] \udfff"


def test_rule_tests_default_to_a_channel_in_scope(tmp_path: Path) -> None:
    from relay.policy import run_rule_tests

    ps = load_rules(
        tmp_path,
        """
        - id: TG
          scope: {direction: outbound, channels: ["telegram-*"]}
          match: {keywords: [alpha]}
          action: flag
          tests: [{text: alpha, expect: flag}, {text: alpha, channel: webchat, expect: allow}, {text: beta, expect: allow}]
        """,
    )
    results = run_rule_tests(ps)
    assert [r.ok for r in results] == [True, True, True]
    assert results[0].test.input.channel == "telegram-x" and results[0].test.input.direction == "outbound"

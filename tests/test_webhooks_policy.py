"""Chinese text from WeChat/WhatsApp clients through the shipped policies: keywords match
inside unspaced sentences, in simplified and traditional script, and the verdict names them."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.policy import EvalInput, PolicySet, apply_verdict, load_policy_dir

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def shipped() -> PolicySet:
    return load_policy_dir(ROOT / "policies")


def verdict(ps: PolicySet, text: str, direction: str = "inbound"):  # type: ignore[no-untyped-def]
    return ps.evaluate(EvalInput(direction=direction, channel="wechat", text=text, attachments=(),
                                 sender_groups=(), first_in_conversation=False, conversation="c-1", message_id="m-1"))


@pytest.mark.parametrize("text,rule,action", [
    ("你好，我这里有内部消息，明天就涨", "CN-001", "quarantine"),
    ("聽說公司有內幕消息", "CN-001", "quarantine"),
    ("放心吧，这个稳赚不赔", "CN-002", "quarantine"),
    ("呢隻基金保證收益", "CN-002", "quarantine"),
    ("有事加我私人微信", "CN-003", "quarantine"),
    ("他们在坐庄", "CN-004", "flag"),
    ("我有内幕消息", "MC-004", "quarantine"),
])
def test_chinese_keywords_match_inside_sentences(shipped: PolicySet, text: str, rule: str, action: str) -> None:
    v = verdict(shipped, text)
    assert rule in v.rules and v.action == action and v.review
    (hit,) = [h for h in v.matched if h.rule == rule]
    assert hit.spans and all(text[s.start:s.end] for s in hit.spans)


@pytest.mark.parametrize("text", ["我想了解一下基金的收益情况", "收益不固定，请注意风险", "请在这里联系我们的客服", "今天市场很平稳"])
def test_ordinary_chinese_passes(shipped: PolicySet, text: str) -> None:
    assert verdict(shipped, text).action == "allow"


def test_outbound_promise_is_quarantined_too(shipped: PolicySet) -> None:
    v = verdict(shipped, "这款产品保本保息，您放心", direction="outbound")
    assert v.action == "quarantine" and "CN-002" in v.rules


def test_redaction_keeps_chinese_around_the_card_number(shipped: PolicySet) -> None:
    text = "我的卡号是 4111 1111 1111 1111 请帮我付款"
    out = apply_verdict(text, verdict(shipped, text))
    assert out.startswith("我的卡号是 ") and out.endswith(" 请帮我付款") and "4111" not in out and "[REDACTED]" in out

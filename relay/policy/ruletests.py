"""Runs the `tests:` of every rule (Semgrep-style tests next to the rule they check).

A test's `expect` is the rule's own outcome for the input: its action when it matches
(in scope, match true, no `unless` exception), otherwise `allow`. Other rules of the set
do not take part, so a test pins down exactly one rule.
"""

from __future__ import annotations

from dataclasses import dataclass

from relay.policy.engine import EvalInput, PolicySet, Rule, RuleTest


@dataclass(frozen=True)
class TestResult:
    rule: Rule
    test: RuleTest
    got: str

    @property
    def ok(self) -> bool:
        return self.got == self.test.expect

    def describe(self) -> str:
        """`file:line: rule ID test #n: expected X, got Y for input {...}`."""
        return (
            f"{self.rule.file}:{self.test.line}: rule {self.rule.id} test #{self.test.index + 1}: "
            f"expected {self.test.expect}, got {self.got} for input {describe_input(self.test.input)}"
        )


def describe_input(inp: EvalInput) -> str:
    parts = [f"text={inp.text!r}", f"direction={inp.direction}", f"channel={inp.channel}"]
    if inp.attachments:
        parts.append("attachments=[" + ", ".join(f"{a.name} {a.mime} {a.size}B" for a in inp.attachments) + "]")
    if inp.sender_groups:
        parts.append(f"sender_groups={list(inp.sender_groups)}")
    if inp.first_in_conversation:
        parts.append("first_in_conversation=true")
    return "{" + ", ".join(parts) + "}"


def run_rule_tests(policy_set: PolicySet) -> list[TestResult]:
    """Every test of every rule, in evaluation order."""
    return [
        TestResult(rule, test, policy_set.rule_outcome(rule, test.input))
        for rule in policy_set.rules
        for test in rule.tests
    ]

"""A compiled policy set and its evaluation of one message into a `Verdict`.

Everything is prepared at load: the rules in evaluation order, one keyword automaton, one
RE2 set, per-(direction, channel) scope lists. Evaluation folds the text once, runs the
automaton once, each regex and detector at most once and only if an in-scope rule asks.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

from relay.model import ACTIONS, Attachment, RuleHit, Span, Verdict
from relay.policy.conditions import Node, Spans
from relay.policy.detectors import DETECTORS, Finding, digit_count
from relay.policy.keywords import KeywordIndex
from relay.policy.normalize import fold_text
from relay.policy.regexes import RegexBank, searchable

_RANK = {action: rank for rank, action in enumerate(ACTIONS)}
_REVIEW_ACTIONS = frozenset({"flag", "quarantine"})
_SCOPE_CACHE_MAX = 4096


@dataclass(frozen=True, slots=True)
class EvalInput:
    """What the policy engine sees of one message."""

    direction: str
    channel: str
    text: str = ""
    attachments: tuple[Attachment, ...] = ()
    sender_groups: tuple[str, ...] = ()
    first_in_conversation: bool = False
    conversation: str = ""
    message_id: str = ""


@dataclass(frozen=True, slots=True)
class RuleTest:
    """One `tests:` entry of a rule: an input and the rule's expected own outcome."""

    index: int
    line: int
    expect: str
    input: EvalInput


@dataclass(frozen=True, slots=True)
class Rule:
    """A compiled rule; `order` is its position in evaluation order."""

    id: str
    policy: str
    file: str
    line: int
    title: str
    severity: str
    action: str
    text: str
    priority: int
    stop: bool
    sample: float | None
    directions: frozenset[str]
    channels: re.Pattern[str] | None
    first_only: bool
    match: Node | None
    unless: tuple[Node, ...]
    tests: tuple[RuleTest, ...] = field(default=())
    channel_globs: tuple[str, ...] = ()
    sla: float | None = None
    """Review deadline in seconds for items this rule sends to review (`sla: 24h`)."""
    notify: bool = False
    """Every match alerts the configured compliance channel (`notify: true`)."""
    silent: bool = False
    """A message this rule quarantines is held without telling its sender (`silent: true`)."""

    def in_scope(self, direction: str, channel: str) -> bool:
        return direction in self.directions and (self.channels is None or self.channels.match(channel) is not None)

    def default_direction(self) -> str:
        return "inbound" if "inbound" in self.directions else "outbound"

    def default_channel(self) -> str:
        """A channel name inside the rule's scope, for tests that do not name one."""
        if self.channels is None or self.channels.match("webchat") is not None:
            return "webchat"
        for glob in self.channel_globs:
            candidate = re.sub(r"\[[^\]]*\]", "x", glob).replace("*", "x").replace("?", "x")
            if self.channels.match(candidate) is not None:
                return candidate
        return "test"


class _Context:
    """Per-message lazily computed scan results shared by every rule of one evaluation."""

    __slots__ = ("text", "channel", "sender_groups", "attachments", "_set", "_kw", "_rx", "_rx_text", "_rx_spans", "_found", "_digits")

    def __init__(self, policy_set: PolicySet, inp: EvalInput) -> None:
        self.text = inp.text
        self.channel = inp.channel
        self.sender_groups = inp.sender_groups
        self.attachments = inp.attachments
        self._set = policy_set
        self._kw: dict[int, Spans] | None = None
        self._rx: frozenset[int] | None = None
        self._rx_text = ""
        self._rx_spans: dict[int, Spans] = {}
        self._found: dict[str, list[Finding]] = {}
        self._digits = -1

    def keyword_hits(self) -> dict[int, Spans]:
        hits = self._kw
        if hits is None:
            hits = self._kw = self._set.keywords.scan(fold_text(self.text)) if self.text else {}
        return hits

    def regex_spans(self, index: int) -> Spans | None:
        matching = self._rx
        if matching is None:
            self._rx_text, data = searchable(self.text)
            matching = self._rx = self._set.regexes.matching(data)
        if index not in matching:
            return None
        spans = self._rx_spans.get(index)
        if spans is None:
            found = self._set.regexes.spans(index, self._rx_text)
            spans = self._rx_spans[index] = [s for s in found if s[0] != s[1]]
        return spans

    def findings(self, detector: str) -> list[Finding]:
        found = self._found.get(detector)
        if found is None:
            min_digits, finder = DETECTORS[detector]
            if min_digits and self._digits < 0:
                self._digits = digit_count(self.text)
            runs = self.text and (min_digits == 0 or self._digits >= min_digits)
            found = self._found[detector] = finder(self.text) if runs else []
        return found


def rule_spans(rule: Rule, ctx: _Context) -> Spans | None:
    """Spans where `rule` matched (possibly empty), or None; scope is checked by the caller."""
    spans: Spans | None = [] if rule.match is None else rule.match.match(ctx)
    if spans is None:
        return None
    for exception in rule.unless:
        if exception.match(ctx) is not None:
            return None
    return spans


def sampled(message_id: str, rule_id: str, share: float) -> bool:
    """Deterministic sampling: the same message and rule always give the same answer."""
    digest = hashlib.sha256(f"{message_id}\x00{rule_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") < share * 2**64


def merge_spans(spans: list[tuple[int, int]]) -> tuple[Span, ...]:
    """Sorted spans with overlapping or touching ranges merged."""
    merged: list[list[int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1][1] = end
        else:
            merged.append([start, end])
    return tuple(Span(s, e) for s, e in merged)


class PolicySet:
    """A loaded, compiled, versioned set of policy files. Immutable; thread-safe to evaluate."""

    def __init__(
        self,
        *,
        version: str,
        files: dict[str, str],
        rules: tuple[Rule, ...],
        keywords: KeywordIndex,
        regexes: RegexBank,
        rules_without_tests: list[str],
        source: str = "",
    ) -> None:
        self.version = version
        self.files = dict(files)
        self.rules = rules
        self.keywords = keywords
        self.regexes = regexes
        self.rules_without_tests = list(rules_without_tests)
        self.source = source
        self._allow = Verdict(action="allow", policy_version=version)
        self._scopes: dict[tuple[str, str], tuple[Rule, ...]] = {}

    def __repr__(self) -> str:
        return f"PolicySet(version={self.version[:12]}, files={len(self.files)}, rules={len(self.rules)})"

    def rule(self, rule_id: str) -> Rule:
        for rule in self.rules:
            if rule.id == rule_id:
                return rule
        raise KeyError(rule_id)

    def _scoped(self, direction: str, channel: str) -> tuple[Rule, ...]:
        key = (direction, channel)
        rules = self._scopes.get(key)
        if rules is None:
            rules = tuple(r for r in self.rules if r.in_scope(direction, channel))
            if len(self._scopes) >= _SCOPE_CACHE_MAX:
                self._scopes = {}
            self._scopes[key] = rules
        return rules

    def evaluate(self, inp: EvalInput) -> Verdict:
        """The verdict for one message: most severe action, every hit, accumulated effects."""
        ctx = _Context(self, inp)
        hits: list[RuleHit] = []
        rank = 0
        review = False
        disclaimers: list[str] = []
        redactions: list[tuple[int, int]] = []
        first = inp.first_in_conversation
        for rule in self._scoped(inp.direction, inp.channel):
            if rule.first_only and not first:
                continue
            spans = rule_spans(rule, ctx)
            if spans is None:
                continue
            is_sampled = rule.sample is not None and sampled(inp.message_id or inp.text, rule.id, rule.sample)
            action = rule.action
            hits.append(
                RuleHit(
                    rule=rule.id,
                    policy=rule.policy,
                    action=action,
                    severity=rule.severity,
                    title=rule.title,
                    spans=(Span(*spans[0]),) if len(spans) == 1 else tuple(Span(s, e) for s, e in sorted(set(spans))),
                    sampled=is_sampled,
                )
            )
            if action == "disclaimer":
                if rule.text not in disclaimers:
                    disclaimers.append(rule.text)
            else:
                if _RANK[action] > rank:
                    rank = _RANK[action]
                if action == "redact":
                    redactions.extend(spans)
            if is_sampled or action in _REVIEW_ACTIONS:
                review = True
            if rule.stop:
                break
        if not hits:
            return self._allow
        return Verdict(
            action=ACTIONS[rank],
            matched=tuple(hits),
            disclaimers=tuple(disclaimers),
            redactions=merge_spans(redactions) if redactions else (),
            policy_version=self.version,
            review=review,
        )

    def rule_outcome(self, rule: Rule, inp: EvalInput) -> str:
        """What `rule` alone does to `inp`: its action if it matches in scope, else `allow`."""
        if not rule.in_scope(inp.direction, inp.channel):
            return "allow"
        if rule.first_only and not inp.first_in_conversation:
            return "allow"
        return "allow" if rule_spans(rule, _Context(self, inp)) is None else rule.action

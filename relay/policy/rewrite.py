"""Applies a verdict's text effects: redactions become `[REDACTED]`, disclaimers go first."""

from __future__ import annotations

from relay.model import Verdict
from relay.policy.engine import merge_spans

REDACTED = "[REDACTED]"


def apply_verdict(text: str, verdict: Verdict) -> str:
    """The text to forward: each merged redaction span replaced, disclaimers on lines before it."""
    if verdict.redactions:
        n = len(text)
        spans = [(max(0, s.start), min(n, s.end)) for s in verdict.redactions if s.start < n and s.end > s.start]
        parts: list[str] = []
        pos = 0
        for span in merge_spans(spans):
            parts.append(text[pos : span.start])
            parts.append(REDACTED)
            pos = span.end
        parts.append(text[pos:])
        text = "".join(parts)
    if verdict.disclaimers:
        lines = list(verdict.disclaimers)
        if text:
            lines.append(text)
        return "\n".join(lines)
    return text

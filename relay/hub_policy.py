"""How the hub asks the policies for a verdict: fail closed, shadow set beside, counted.

A policy set that raises must hold the message for review, never forward it unchecked; that
rule, the shadow verdict and the per-action counters live here, apart from routing.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Callable

from relay.hub_records import Event, HubStats, verdict_json
from relay.model import Attachment, RuleHit, Verdict, action_rank
from relay.policy import EvalInput, PolicySet
from relay.routing import Conversation

log = logging.getLogger("relay.hub")

INTEGRITY_RULE = "RELAY-INTEGRITY"
"""The hit added when a file's bytes differ from what the network declared: flagged for review."""


def with_integrity_flag(verdict: Verdict, attachments: tuple[Attachment, ...]) -> Verdict:
    """`verdict`, at least flagged and in review, with one hit per attachment whose bytes do not
    match what the network declared (compliance must see such a file, not take it on trust)."""
    bad = [a for a in attachments if a.integrity]
    if not bad:
        return verdict
    hits = tuple(RuleHit(INTEGRITY_RULE, "relay", "flag", "high", f"{a.name or 'file'}: {a.integrity}"[:300])
                 for a in bad)
    action = verdict.action if action_rank(verdict.action) >= action_rank("flag") else "flag"
    return replace(verdict, action=action, matched=verdict.matched + hits, review=True)


class HubPolicy:
    """Mixed into `relay.hub.Hub`, which sets these attributes."""

    policies: Callable[[], PolicySet]
    shadow: Callable[[], PolicySet | None] | None
    stats: HubStats

    @staticmethod
    def _eval_input(direction: str, channel: str, text: str, attachments: tuple[Attachment, ...],
                    groups: tuple[str, ...], conv: Conversation, mid: str) -> EvalInput:
        return EvalInput(direction=direction, channel=channel, text=text, attachments=attachments,
                         sender_groups=groups, first_in_conversation=direction == "outbound" and not conv.has_outbound,
                         conversation=conv.id, message_id=mid)

    def _evaluate(self, inp: EvalInput) -> Verdict:
        try:
            return self.policies().evaluate(inp)
        except Exception:  # fail closed: hold for review rather than forward unchecked
            self.stats.policy_errors += 1
            log.exception("policy evaluation failed for %s", inp.message_id)
            return Verdict(action="quarantine", review=True, policy_version="error")

    def _shadow_event(self, inp: EvalInput) -> Event | None:
        shadow = self.shadow() if self.shadow else None
        if shadow is None:
            return None
        try:
            v = shadow.evaluate(inp)
        except Exception as exc:
            return ("policy.shadow_verdict", {"message_id": inp.message_id, "error": repr(exc)}, inp.conversation)
        return ("policy.shadow_verdict", {**verdict_json(v, inp.message_id), "shadow": True}, inp.conversation)

    def _silent(self, v: Verdict) -> bool:
        """A quarantining rule with `silent: true` holds the message without telling its sender."""
        policies = self.policies()
        for hit in v.matched:
            if hit.action == "quarantine":
                try:
                    if policies.rule(hit.rule).silent:
                        return True
                except KeyError:  # the set was swapped since: keep quiet rather than tip anyone off
                    return True
        return False

    def _count(self, v: Verdict) -> None:
        if v.action == "block":
            self.stats.blocked += 1
        elif v.action == "quarantine":
            self.stats.quarantined += 1
        elif v.action == "flag":
            self.stats.flagged += 1
        elif v.action == "redact":
            self.stats.redacted += 1

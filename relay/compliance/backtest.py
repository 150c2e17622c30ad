"""Policy backtest and shadow comparison: what a proposed policy set would have decided.

`backtest` replays journaled messages through a PolicySet and compares, per rule, with the
verdicts recorded at the time, so compliance sees the effect of an edit before deploying it.
`shadow_report` does the same comparison for the verdicts a shadow set journaled beside the
live one. Messages under a data-subject erasure request are skipped (counted, never replayed
or quoted as examples), as erased ones are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from relay.evidence.collect import Ev, Reader, is_restricted, iso, iter_events
from relay.compliance.restricted import RESTRICTED_NOTE
from relay.compliance.holds import load_state
from relay.model import Attachment

KINDS = ("message.received", "policy.verdict", "policy.shadow_verdict")


@dataclass
class RuleChange:
    added: int = 0
    removed: int = 0
    action_changed: int = 0
    examples: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"added": self.added, "removed": self.removed, "action_changed": self.action_changed,
                "changed": self.added + self.removed + self.action_changed, "examples": self.examples}


@dataclass
class Comparison:
    """Accumulates recorded-vs-proposed verdicts message by message."""

    examples: int = 5
    compared: int = 0
    changed: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    transitions: dict[str, int] = field(default_factory=dict)
    rules: dict[str, RuleChange] = field(default_factory=dict)
    recorded_versions: dict[str, int] = field(default_factory=dict)

    def skip(self, why: str) -> None:
        self.skipped[why] = self.skipped.get(why, 0) + 1

    def add(self, msg: Mapping[str, Any], ts: float, conversation: str | None, recorded: Mapping[str, Any],
            proposed: Mapping[str, Any]) -> None:
        self.compared += 1
        v = str(recorded.get("policy_version", ""))
        self.recorded_versions[v] = self.recorded_versions.get(v, 0) + 1
        old = {str(h.get("rule")): str(h.get("action")) for h in recorded.get("rules") or []}
        new = {str(h.get("rule")): str(h.get("action")) for h in proposed.get("rules") or []}
        old_action, new_action = str(recorded.get("action")), str(proposed.get("action"))
        if old == new and old_action == new_action:
            return
        self.changed += 1
        if old_action != new_action:
            key = f"{old_action}->{new_action}"
            self.transitions[key] = self.transitions.get(key, 0) + 1
        example = {
            "message_id": msg.get("id"), "conversation": conversation, "time": iso(ts),
            "direction": msg.get("direction"), "channel": msg.get("channel"),
            "text": str(msg.get("text") or "")[:200],
            "recorded": {"action": old_action, "rules": sorted(old)},
            "proposed": {"action": new_action, "rules": sorted(new)},
        }
        for rid in set(old) | set(new):
            if rid in old and rid in new and old[rid] == new[rid]:
                continue
            rc = self.rules.setdefault(rid, RuleChange())
            if rid not in old:
                rc.added += 1
            elif rid not in new:
                rc.removed += 1
            else:
                rc.action_changed += 1
            if len(rc.examples) < self.examples:
                rc.examples.append(example)

    def to_dict(self) -> dict[str, Any]:
        return {"compared": self.compared, "changed": self.changed, "unchanged": self.compared - self.changed,
                "skipped": self.skipped, "transitions": self.transitions, "recorded_policy_versions": self.recorded_versions,
                "rules": {rid: rc.to_dict() for rid, rc in sorted(self.rules.items())}}


def _attachments(body: Mapping[str, Any]) -> tuple[Attachment, ...]:
    return tuple(Attachment(str(a.get("name") or ""), str(a.get("mime") or ""), int(a.get("size") or 0),
                            str(a.get("sha256") or ""), str(a.get("platform_ref") or ""))
                 for a in body.get("attachments") or [] if isinstance(a, dict) and not a.get("refused"))


def verdict_dict(v: Any) -> dict[str, Any]:
    return {"action": v.action, "policy_version": v.policy_version,
            "rules": [{"rule": h.rule, "action": h.action} for h in v.matched]}


def replay(events: Iterable[Ev], policies: Any, groups: Mapping[str, tuple[str, ...]], since: float | None,
           examples: int = 5, restricted: Mapping[str, int] | None = None) -> Comparison:
    """Evaluate each journaled message (from `since`) with `policies` against its recorded verdict."""
    from relay.policy import EvalInput

    cmp = Comparison(examples=examples)
    pending: dict[str, Ev] = {}
    answered: set[str] = set()
    for ev in events:
        if ev.kind == "message.received":
            b = ev.body
            conv = ev.conversation or ""
            if b.get("kind") in ("delete", "event") or b.get("refused"):
                if b.get("direction") == "outbound" and b.get("kind") == "message" and not b.get("refused"):
                    answered.add(conv)
                continue
            pending[str(b.get("id"))] = ev
            continue
        if ev.kind != "policy.verdict" or ev.body.get("shadow"):
            continue
        msg_ev = pending.pop(str(ev.body.get("message_id")), None)
        if msg_ev is None:
            continue
        b = msg_ev.body
        conv = msg_ev.conversation or ""
        first = b.get("direction") == "outbound" and conv not in answered
        if b.get("direction") == "outbound" and ev.body.get("action") not in ("block", "quarantine"):
            answered.add(conv)
        if since is not None and msg_ev.ts < since:
            continue
        if "erased" in b:
            cmp.skip("erased")
            continue
        if is_restricted(msg_ev.seq, b.get("client"), restricted or {}):
            cmp.skip(RESTRICTED_NOTE)
            continue
        channel = str(b.get("channel") or "")
        if channel == "relay":
            channel = str((b.get("client") or {}).get("channel") or channel)
        inp = EvalInput(direction=str(b.get("direction")), channel=channel, text=str(b.get("text") or ""),
                        attachments=_attachments(b),
                        sender_groups=groups.get(str(b.get("employee") or ""), ()) if b.get("direction") == "outbound" else (),
                        first_in_conversation=first, conversation=conv, message_id=str(b.get("id")))
        cmp.add(b, msg_ev.ts, conv, ev.body, verdict_dict(policies.evaluate(inp)))
    return cmp


async def backtest(reader: Reader, policies: Any, groups: Mapping[str, tuple[str, ...]], since: float | None = None,
                   examples: int = 5) -> dict[str, Any]:
    _, restricted = await load_state(reader)
    events = await iter_events(reader, KINDS)
    result = replay(events, policies, groups, since, examples, restricted).to_dict()
    result["proposed_policy_version"] = policies.version
    result["since"] = iso(since) if since is not None else None
    return result


async def shadow_report(reader: Reader, since: float | None = None, examples: int = 5) -> dict[str, Any]:
    """Live verdicts against the shadow set's journaled verdicts for the same messages."""
    _, restricted = await load_state(reader)
    events = await iter_events(reader, KINDS)
    msgs: dict[str, Ev] = {}
    live: dict[str, dict[str, Any]] = {}
    cmp = Comparison(examples=examples)
    versions: dict[str, int] = {}
    for ev in events:
        if ev.kind == "message.received":
            msgs[str(ev.body.get("id"))] = ev
        elif ev.kind == "policy.verdict" and not ev.body.get("shadow"):
            live[str(ev.body.get("message_id"))] = ev.body
        elif ev.body.get("shadow") or ev.kind == "policy.shadow_verdict":
            mid = str(ev.body.get("message_id"))
            m, rec = msgs.get(mid), live.get(mid)
            if m is None or rec is None or (since is not None and m.ts < since):
                continue
            if "error" in ev.body:
                cmp.skip("shadow error")
                continue
            if is_restricted(m.seq, m.body.get("client"), restricted):
                cmp.skip(RESTRICTED_NOTE)
                continue
            sv = str(ev.body.get("policy_version", ""))
            versions[sv] = versions.get(sv, 0) + 1
            cmp.add(m.body, m.ts, m.conversation, rec, ev.body)
    out = cmp.to_dict()
    out["shadow_policy_versions"] = versions
    return out

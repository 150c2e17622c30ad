"""The ids, JSON bodies and counters the hub writes into the journal.

Kept apart from the pipeline because the same shapes are rebuilt by review re-entry and
read back by handover: one place decides how an id is derived and what a body holds.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Any

from relay.model import Attachment, Inbound, Party, RuleHit, Span, Verdict
from relay.outbox import party_json
from relay.routing import Conversation

SYSTEM = Party("relay", "system", "relay")
Event = tuple[str, dict[str, Any], str | None]


@dataclass(frozen=True)
class RawRefs:
    """Blob digests of a received item's raw payload and of its decrypted form ('' = inline)."""

    raw: str = ""
    decrypted: str = ""


def message_id_for(channel: str, platform_id: str) -> str:
    """Deterministic relay id of a received item, so a redelivery maps to the same id."""
    return "m-" + hashlib.sha256(f"{channel}\x00{platform_id}".encode()).hexdigest()[:24]


def delivery_id_for(message_id: str, channel: str, user: str, kind: str, text: str = "") -> str:
    """Deterministic, so a re-run of the same decision cannot queue the same delivery twice."""
    key = f"{message_id}\x00{channel}\x00{user}\x00{kind}\x00{text}"
    return "d-" + hashlib.sha256(key.encode()).hexdigest()[:24]


def verdict_json(v: Verdict, message_id: str) -> dict[str, Any]:
    return {
        "message_id": message_id,
        "action": v.action,
        "review": v.review,
        "rules": [
            {"rule": h.rule, "policy": h.policy, "action": h.action, "severity": h.severity, "title": h.title,
             "spans": [[s.start, s.end] for s in h.spans], "sampled": h.sampled}
            for h in v.matched
        ],
        "disclaimers": list(v.disclaimers),
        "redactions": [[s.start, s.end] for s in v.redactions],
        "policy_version": v.policy_version,
    }


def verdict_from_json(vb: dict[str, Any]) -> Verdict:
    """The part of a journaled `policy.verdict` body needed to apply it again (review release)."""
    return Verdict(action=vb["action"], matched=tuple(RuleHit(r["rule"], r.get("policy", ""), r.get("action", ""))
                                                      for r in vb.get("rules", [])),
                   disclaimers=tuple(vb.get("disclaimers", [])),
                   redactions=tuple(Span(s, e) for s, e in vb.get("redactions", [])),
                   policy_version=vb.get("policy_version", ""))


def attachment_json(a: Attachment) -> dict[str, Any]:
    out = {"name": a.name, "mime": a.mime, "size": a.size, "sha256": a.sha256,
           "platform_ref": a.platform_ref, "refused": a.refused}
    if a.integrity:
        out["integrity"] = a.integrity
    return out


def received_body(inb: Inbound, mid: str, direction: str, attachments: tuple[Attachment, ...],
                  raw_sha: RawRefs, conv: Conversation | None, employee: str | None,
                  refused: str | None = None) -> dict[str, Any]:
    """The `message.received` body: the item as it arrived, raw bytes inline or named by blob."""
    body: dict[str, Any] = {
        "id": mid,
        "direction": direction,
        "channel": inb.channel,
        "platform_id": inb.platform_id,
        "chat": inb.chat,
        "kind": inb.kind,
        "sender": party_json(inb.sender),
        "text": inb.text,
        "attachments": [attachment_json(a) for a in attachments],
        "reply_to": message_id_for(inb.channel, inb.reply_to) if inb.reply_to else None,
        "edits": message_id_for(inb.channel, inb.edits) if inb.edits else None,
        "reply_to_platform": inb.reply_to,
        "edits_platform": inb.edits,
        "sent_at": inb.sent_at,
        "raw_sha256": raw_sha.raw or None,
        "client": party_json(conv.client) if conv else None,
        "employee": employee,
    }
    if inb.raw and not raw_sha.raw:
        body["raw_inline"] = base64.b64encode(inb.raw).decode("ascii")
        body["raw_digest"] = hashlib.sha256(inb.raw).hexdigest()
    if raw_sha.decrypted:
        body["decrypted_sha256"] = raw_sha.decrypted
    elif inb.decrypted:
        body["decrypted_inline"] = base64.b64encode(inb.decrypted).decode("ascii")
        body["decrypted_digest"] = hashlib.sha256(inb.decrypted).hexdigest()
    if refused:
        body["refused"] = refused
    if inb.notice:
        body["notice"] = inb.notice
    return body


@dataclass
class HubStats:
    received: int = 0
    duplicates: int = 0
    refused: int = 0
    blocked: int = 0
    quarantined: int = 0
    flagged: int = 0
    redacted: int = 0
    policy_errors: int = 0

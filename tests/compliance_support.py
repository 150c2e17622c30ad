"""A recorded history written to a real Journal with the event bodies the hub writes.

Used by the compliance tests that need a journal but not a running hub (export, retention,
search, backtest): the events follow docs/internals.md ("Event bodies").
"""

from __future__ import annotations

import base64
import hashlib

import hashlib
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from relay.journal import Journal


def party(channel: str, user: str, display: str = "") -> dict[str, str]:
    return {"channel": channel, "user": user, "display": display}


@dataclass
class History:
    """Writes messages, verdicts, deliveries and assignments like the hub does."""

    journal: Journal
    ids: dict[str, str] = field(default_factory=dict)
    seqs: dict[str, int] = field(default_factory=dict)

    async def message(self, label: str, conversation: str, direction: str, text: str, *,
                      client: dict[str, str], employee: str = "alice", kind: str = "message",
                      attachments: list[tuple[str, str, bytes]] = (), edits: str | None = None,
                      action: str = "allow", rules: list[dict[str, Any]] | None = None,
                      review: bool | None = None, channel: str | None = None,
                      deliver: bool = True, policy_version: str = "v1", inline_raw: bool = False) -> str:
        """A message.received + policy.verdict (+ delivery.queued/message.delivered)."""
        j = self.journal
        mid = "m-" + uuid.uuid4().hex[:12]
        self.ids[label] = mid
        raw = f"raw:{label}:{text}".encode()
        raw_sha = "" if inline_raw else await j.put_blob(raw)
        atts = []
        for name, mime, data in attachments:
            sha = await j.put_blob(data)
            atts.append({"name": name, "mime": mime, "size": len(data), "sha256": sha, "platform_ref": "", "refused": ""})
        if direction == "inbound":
            sender = client
            chan = channel or client["channel"]
        else:
            sender = party("webdesk", employee, employee.title())
            chan = channel or "webdesk"
        body = {
            "id": mid, "direction": direction, "channel": chan, "platform_id": f"p-{label}", "chat": conversation,
            "kind": kind, "sender": sender, "text": text, "attachments": atts, "reply_to": None,
            "edits": self.ids.get(edits) if edits else None, "sent_at": None, "raw_sha256": raw_sha,
            "client": client, "employee": employee,
        }
        if inline_raw:  # as the hub stores payloads up to 16 KiB
            del body["raw_sha256"]
            body["raw_inline"] = base64.b64encode(raw).decode("ascii")
            body["raw_digest"] = hashlib.sha256(raw).hexdigest()
        ev = await j.append("message.received", body, conversation)
        self.seqs[label] = ev.seq
        rules = rules or []
        await j.append("policy.verdict", {
            "message_id": mid, "action": action,
            "review": review if review is not None else action in ("flag", "quarantine"),
            "rules": rules, "disclaimers": [], "redactions": [], "policy_version": policy_version}, conversation)
        if deliver and action not in ("block", "quarantine"):
            to = party("webdesk", employee) if direction == "inbound" else client
            did = "d-" + uuid.uuid4().hex[:10]
            await j.append("delivery.queued", {
                "delivery_id": did, "message_id": mid, "channel": to["channel"], "to": to,
                "out": {"kind": kind, "text": text, "attachments": atts, "reply_to": None, "edits": None,
                        "origin": sender, "client": client, "action": action, "rules": [r["rule"] for r in rules]}},
                conversation)
            await j.append("message.delivered", {"delivery_id": did, "message_id": mid, "channel": to["channel"],
                                                 "platform_id": f"out-{label}", "attempt": 1}, conversation)
        return mid

    async def assign(self, conversation: str, employee: str | None, previous: str | None,
                     client: dict[str, str], actor: str = "relay", reason: str = "first message") -> None:
        await self.journal.append("conversation.assigned", {
            "conversation": conversation, "employee": employee, "previous": previous,
            "actor": actor, "reason": reason, "client": client}, conversation)


def hit(rule: str, action: str, spans: list[list[int]] | None = None, title: str = "") -> dict[str, Any]:
    return {"rule": rule, "policy": "fin-comms", "action": action, "severity": "high", "title": title,
            "spans": spans or [], "sampled": False}


PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
    "0000000d49444154789c6360f8cfc0f01f0005000201a1e6c3ab0000000049454e44ae426082")


async def sample_history(journal: Journal) -> History:
    """Two conversations: one with an attachment, an edit, a delete, a flag and a handover;
    one with a quarantined message. Returns the history with labels → ids."""
    h = History(journal)
    ann = party("webchat", "ann", "Ann Client")
    ben = party("webchat", "ben", "Ben 客户")
    await h.assign("c-ann", "alice", None, ann)
    await h.message("a1", "c-ann", "inbound", "Hello, I need help with my account", client=ann)
    await h.message("a2", "c-ann", "outbound", "Sure, here is the form", client=ann,
                    attachments=[("form.pdf", "application/pdf", b"%PDF-1.4 form"), ("chart.png", "image/png", PNG)])
    await h.message("a3", "c-ann", "inbound", "Is there a guaranteed return?", client=ann,
                    action="flag", rules=[hit("MNPI-001", "flag", [[11, 28]], "Promissory language")])
    await h.message("a4", "c-ann", "inbound", "Is there a guaranteed profit?", client=ann, kind="edit", edits="a3",
                    action="flag", rules=[hit("MNPI-001", "flag", [[11, 28]])])
    await h.message("a5", "c-ann", "inbound", "", client=ann, kind="delete", edits="a1")
    await h.assign("c-ann", "bob", "alice", ann, actor="admin", reason="alice left")
    await h.message("b1", "c-ben", "inbound", "我想买股票，株価はいくらですか", client=ben, employee="bob")
    await h.message("b2", "c-ben", "outbound", "Insider tip: buy before the announcement", client=ben, employee="bob",
                    action="quarantine", rules=[hit("MNPI-002", "quarantine", [[0, 11]], "Insider information")])
    return h


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def open_journal(path: Path, **kw: Any) -> Journal:
    return await Journal.open(path, checkpoint_every=kw.pop("checkpoint_every", 1000), **kw)


def compliance_config(data_dir: Path, policies: Path | None = None, **extra: Any) -> dict[str, Any]:
    """A config with web chat/desk, reviewers of each role, an alert channel and retention."""
    root = Path(__file__).resolve().parents[1]
    cfg: dict[str, Any] = {
        "data_dir": str(data_dir),
        "listen": {"host": "127.0.0.1", "port": 0},
        "policies": {"dir": str(policies or root / "policies")},
        "channels": {"webchat": {"network": "webchat", "side": "client"},
                     "webdesk": {"network": "webdesk", "side": "staff"}},
        "employees": {n: {"name": n.title(), "staff": {"channel": "webdesk", "address": n}, "groups": ["advisors"]}
                      for n in ("alice", "bob")},
        "desks": {"advisors": {"clients": ["webchat"], "members": ["alice", "bob"]}},
        "reviewers": {"carol": {"role": "reviewer"}, "dave": {"role": "supervisor"}, "erin": {"role": "admin"}},
        "compliance": {"alerts": {"channel": "webdesk", "to": "carol"}, "sla": {"quarantine": "24h"}},
        "retention": {"default": "6y", "classes": {"mifid2": {"period": "7y", "channels": ["webchat"]}}},
    }
    cfg.update(extra)
    return cfg


def write_config(path: Path, cfg: dict[str, Any]) -> Path:
    import yaml
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


TEST_POLICY = """\
schema: relay-policy/v1
policy: {id: review-test, version: 1}
rules:
  - id: Q-001
    title: Inside information
    severity: high
    match: {keywords: [insider, "before the announcement"]}
    action: quarantine
    tests:
      - {text: "an insider said", expect: quarantine}
  - id: F-001
    title: Promissory language
    severity: medium
    match: {keywords: [guaranteed]}
    action: flag
    tests:
      - {text: "guaranteed profit", expect: flag}
"""


def write_policies(directory: Path, text: str = TEST_POLICY) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "test.yaml").write_text(text, encoding="utf-8")
    return directory


def memory_compliance_config(data_dir: Path, policies: Path, **extra: Any) -> dict[str, Any]:
    """Client and staff sides as in-process channels (bots/memory.py), alerts to a staff room."""
    cfg: dict[str, Any] = {
        "data_dir": str(data_dir),
        "listen": {"host": "127.0.0.1", "port": 0},
        "policies": {"dir": str(policies), "reload_seconds": 0.2},
        "outbox": {"base_delay": 0.02, "max_delay": 0.2},
        "channels": {"clients": {"network": "memory", "side": "client"},
                     "staff": {"network": "memory", "side": "staff"}},
        "employees": {n: {"name": n.title(), "staff": {"channel": "staff", "address": n}, "groups": ["advisors"]}
                      for n in ("ann", "ben")},
        "desks": {"desk": {"clients": ["clients"], "members": ["ann", "ben"]}},
        "reviewers": {"carol": {"role": "reviewer"}, "dave": {"role": "supervisor"}, "erin": {"role": "admin"}},
        "compliance": {"alerts": {"channel": "staff", "to": "compliance-room"}, "sla": {"quarantine": "24h"},
                       "notify": ["Q-001"]},
    }
    cfg.update(extra)
    return cfg


async def until(pred: Any, timeout: float = 5.0) -> None:
    import asyncio
    for _ in range(int(timeout / 0.01)):
        if pred():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")

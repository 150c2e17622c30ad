"""One RFC 5322 message per journaled chat message, for e-mail based archive and review tools.

Chat parties get synthetic addresses under `.relay.invalid` (RFC 2606), the relay's facts
(channel, conversation, verdict, rules) travel in `X-Relay-*` headers, and attachments are
MIME parts with their original bytes.
"""

from __future__ import annotations

import email.policy
import re
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from datetime import datetime, timezone
from typing import Any, Mapping

from relay.evidence.collect import MessageRecord, iso

POLICY = email.policy.default.clone(linesep="\r\n", max_line_length=998)
_LOCAL = re.compile(r"[^A-Za-z0-9._+-]")


def _address(party: Mapping[str, Any] | None, fallback: str) -> Address:
    party = party or {}
    user = str(party.get("user") or fallback)
    channel = str(party.get("channel") or "relay")
    local = _LOCAL.sub("_", user).strip(".") or "unknown"
    domain = (_LOCAL.sub("-", channel).strip(".-") or "relay") + ".relay.invalid"
    return Address(display_name=str(party.get("display") or ""), username=local, domain=domain)


def _recipient(m: MessageRecord) -> Address:
    if m.direction == "outbound":
        return _address(m.client, "client")
    emp = m.employee or "desk"
    return Address(display_name=emp, username=_LOCAL.sub("_", emp) or "desk", domain="staff.relay.invalid")


def _body_text(m: MessageRecord) -> str:
    if m.erased is not None:
        return f"[content erased {iso(m.erased.get('ts'))}: {m.erased.get('reason', '')}]"
    if m.kind == "delete":
        return f"[the sender deleted message {m.body.get('edits') or m.body.get('edits_platform') or ''}]"
    text = m.text
    if m.kind == "edit":
        target = m.body.get("edits") or m.body.get("edits_platform") or ""
        return f"[edit of message {target}]\n{text}"
    return text


def render_eml(m: MessageRecord, blobs: Mapping[str, bytes | None]) -> bytes:
    """The message as RFC 5322 bytes (CRLF line ends); `blobs` maps attachment digests to bytes."""
    msg = EmailMessage(policy=POLICY)
    msg["From"] = _address(m.sender, "unknown")
    msg["To"] = _recipient(m)
    when = m.body.get("sent_at") or m.ts
    msg["Date"] = format_datetime(datetime.fromtimestamp(float(when), timezone.utc))
    msg["Message-ID"] = f"<{m.id}@relay.invalid>"
    ref = m.body.get("reply_to") or m.body.get("edits")
    if ref:
        msg["In-Reply-To"] = f"<{ref}@relay.invalid>"
        msg["References"] = f"<{ref}@relay.invalid>"
    subject_text = _body_text(m).splitlines()[0] if _body_text(m) else ""
    msg["Subject"] = f"[{m.direction} {m.kind}] {subject_text[:60]}".rstrip()
    headers = {
        "X-Relay-Message-Id": m.id,
        "X-Relay-Journal-Seq": str(m.seq),
        "X-Relay-Channel": str(m.body.get("channel", "")),
        "X-Relay-Conversation": m.conversation,
        "X-Relay-Direction": m.direction,
        "X-Relay-Kind": m.kind,
        "X-Relay-Client": f"{m.client.get('channel', '')}:{m.client.get('user', '')}",
        "X-Relay-Employee": m.employee,
        "X-Relay-Verdict": m.action,
        "X-Relay-Rules": ", ".join(m.rules),
        "X-Relay-Policy-Version": str((m.verdict or {}).get("policy_version", "")),
        "X-Relay-Raw-SHA256": str(m.body.get("raw_sha256") or ""),
    }
    if m.decisions:
        headers["X-Relay-Review"] = "; ".join(
            f"{d.get('decision')} by {d.get('reviewer')} at {iso(ts)}" for ts, d in m.decisions)
    if m.erased is not None:
        headers["X-Relay-Erased"] = f"{iso(m.erased.get('ts'))} {m.erased.get('reason', '')}".strip()
    if m.restricted:
        headers["X-Relay-Restricted"] = "data-subject erasure request pending"
    for name, value in headers.items():
        if value:
            msg[name] = value
    msg.set_content(_body_text(m) or "", subtype="plain", charset="utf-8")
    for att in m.attachments:
        sha = str(att.get("sha256") or "")
        data = blobs.get(sha) if sha else None
        name = str(att.get("name") or "attachment")
        if data is None or att.get("refused"):
            why = att.get("refused") or ("erased" if m.erased is not None else "content not in the journal")
            msg.add_attachment(f"Attachment {name} ({att.get('mime')}, {att.get('size')} bytes, sha256 {sha or '-'}) not included: {why}\n",
                               subtype="plain", charset="utf-8", filename=f"{name}.missing.txt")
            continue
        maintype, _, subtype = str(att.get("mime") or "application/octet-stream").partition("/")
        msg.add_attachment(data, maintype=maintype or "application", subtype=subtype or "octet-stream", filename=name)
    return msg.as_bytes(policy=POLICY)

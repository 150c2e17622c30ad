"""One RFC 5322 message per journaled chat message, for e-mail based archive and review tools.

Chat parties get synthetic addresses under `.relay.invalid` (RFC 2606), the relay's facts
(channel, conversation, verdict, rules) travel in `X-Relay-*` headers, and attachments are
MIME parts with their original bytes.
"""

from __future__ import annotations

import email._encoded_words as _ew
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


def _headers(m: MessageRecord) -> list[tuple[str, Any]]:
    """The message's own headers, in order (the MIME ones follow from its content)."""
    out: list[tuple[str, Any]] = [("From", _address(m.sender, "unknown")), ("To", _recipient(m))]
    when = m.body.get("sent_at") or m.ts
    out.append(("Date", format_datetime(datetime.fromtimestamp(float(when), timezone.utc))))
    out.append(("Message-ID", f"<{m.id}@relay.invalid>"))
    ref = m.body.get("reply_to") or m.body.get("edits")
    if ref:
        out.append(("In-Reply-To", f"<{ref}@relay.invalid>"))
        out.append(("References", f"<{ref}@relay.invalid>"))
    body_text = _body_text(m)
    subject_text = body_text.splitlines()[0] if body_text else ""
    out.append(("Subject", f"[{m.direction} {m.kind}] {subject_text[:60]}".rstrip()))
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
    out.extend((name, value) for name, value in headers.items() if value)
    return out


def render_eml(m: MessageRecord, blobs: Mapping[str, bytes | None]) -> bytes:
    """The message as RFC 5322 bytes (CRLF line ends); `blobs` maps attachment digests to bytes.

    A message without attachments is written directly (`_render_plain`): the same bytes the
    standard library's `email` package writes, at a small part of its cost; the rest go through it."""
    headers = _headers(m)
    if not m.attachments:
        plain = _render_plain(headers, _body_text(m) or "")
        if plain is not None:
            return plain
    return render_with_email(m, blobs, headers)


def render_with_email(m: MessageRecord, blobs: Mapping[str, bytes | None],
                      headers: list[tuple[str, Any]] | None = None) -> bytes:
    """`render_eml` through `email.message.EmailMessage` (multipart messages, and the reference
    the direct writer is checked against in tests/test_compliance_eml.py)."""
    msg = EmailMessage(policy=POLICY)
    for name, value in headers if headers is not None else _headers(m):
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


_SIMPLE = re.compile(r"[\x21-\x7e]+(?: [\x21-\x7e]+)*\Z")
"""A header value the email package writes verbatim: printable ASCII words, single spaces."""
_MSG_ID = re.compile(r"<[A-Za-z0-9._+-]+@[A-Za-z0-9.-]+>\Z")
_DATE = re.compile(r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
                   r" \d{4} \d\d:\d\d:\d\d [+-]\d{4}\Z")
"""What `format_datetime` writes: a Date header re-parsed from it comes out unchanged."""
_VERBATIM = frozenset({"subject", "in-reply-to", "references"})
"""Unstructured headers."""
_FOLDED: dict[tuple[str, str], bytes] = {}
_FOLDED_MAX = 256
"""Distinct values kept (messages are written conversation by conversation: their parties repeat)."""


def header_line(name: str, value: str) -> bytes:
    """`Name: value` CRLF as `EmailMessage.as_bytes(policy=POLICY)` writes it for this header."""
    lower = name.lower()
    if ((lower in _VERBATIM or lower.startswith("x-")) and _SIMPLE.match(value) and "=?" not in value
            and len(name) + 2 + len(value) <= POLICY.max_line_length) or (lower == "message-id" and _MSG_ID.match(value)) \
            or (lower == "date" and _DATE.match(value)):
        return f"{name}: {value}\r\n".encode("ascii")
    if lower in _VERBATIM or lower.startswith("x-"):
        mixed = _mixed_line(name, value)
        if mixed is not None:
            return mixed
    key = (name, value)
    line = _FOLDED.get(key)
    if line is None:
        line = POLICY.fold_binary(*POLICY.header_store_parse(name, value))
        if len(_FOLDED) >= _FOLDED_MAX:
            _FOLDED.clear()
        _FOLDED[key] = line
    return line


_ASCII_WORD = re.compile(r"[\x21-\x7e]+\Z")
_WIDE = re.compile(r"[^\x00-\x9f]+\Z")
"""A word the encoded word will carry: no ASCII or C1 control character, no space."""


def _mixed_line(name: str, value: str) -> bytes | None:
    """An unstructured header with non-ASCII words, as the email package folds it when it fits one
    line: ASCII words stay as they are; from the first non-ASCII word to the last, all is one
    RFC 2047 encoded word (its folder merges each further one into the encoded word before it).
    None for anything else (tabs, runs of spaces, "=?", control characters, long lines)."""
    words = value.split(" ")
    first = last = -1
    for i, word in enumerate(words):
        if word.isascii():
            if not _ASCII_WORD.match(word) or "=?" in word:
                return None
        elif _WIDE.match(word):
            if first < 0:
                first = i
            last = i
        else:
            return None
    if first < 0:
        return None
    try:
        ew = _ew.encode(" ".join(words[first:last + 1]), charset="utf-8")
    except UnicodeEncodeError:
        return None
    line = " ".join([f"{name}:", *words[:first], ew, *words[last + 1:]])
    if len(line) > POLICY.max_line_length - 100:
        return None
    return (line + "\r\n").encode("ascii")


_TEXT_PLAIN = {"7bit": b'Content-Type: text/plain; charset="utf-8"\r\nContent-Transfer-Encoding: 7bit\r\nMIME-Version: 1.0\r\n\r\n',
               "8bit": b'Content-Type: text/plain; charset="utf-8"\r\nContent-Transfer-Encoding: 8bit\r\nMIME-Version: 1.0\r\n\r\n'}


def _render_plain(headers: list[tuple[str, Any]], text: str) -> bytes | None:
    """A single text/plain part as `set_content(text, charset="utf-8")` then `as_bytes` write it,
    when its lines fit (7bit or 8bit transfer encoding); None when the email package must choose."""
    try:
        lines = text.encode("utf-8").splitlines()
    except UnicodeEncodeError:
        return None
    if lines and max(map(len, lines)) > POLICY.max_line_length:
        return None
    values = [(name, str(value)) for name, value in headers]
    if any(len(v.splitlines()) > 1 for _, v in values):
        return None  # line breaks (of any kind str.splitlines knows): the email package decides
    body = b"\r\n".join(lines) + b"\r\n"
    cte = "7bit" if body.isascii() else "8bit"
    return b"".join([header_line(name, value) for name, value in values]) + _TEXT_PLAIN[cte] + body

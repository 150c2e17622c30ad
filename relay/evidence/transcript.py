"""An HTML transcript per conversation that a regulator can read without any tool.

Static HTML, no scripts: each message with its time, sender, text, attachments (linked, images
inline), edits and deletions (the original stays visible), verdict and rules, review
decisions, deliveries and handovers, in journal order.
"""

from __future__ import annotations

from html import escape
from typing import Any, Mapping

from relay.evidence.collect import MessageRecord, iso

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em;color:#111}
table{border-collapse:collapse;width:100%}
td,th{border-bottom:1px solid #ddd;padding:.4em .6em;vertical-align:top;text-align:left}
.inbound{background:#f7fbff}.outbound{background:#fbfbf5}
.text{white-space:pre-wrap}
.deleted .text{text-decoration:line-through;color:#777}
.verdict{font-weight:bold}.v-block,.v-quarantine{color:#a00}.v-flag,.v-redact{color:#a60}
.note{color:#555;font-size:90%}
mark{background:#ffe08a}
.event td{background:#eef;font-style:italic}
img.attachment{max-width:320px;display:block}
"""


def _party(p: Mapping[str, Any] | None) -> str:
    p = p or {}
    display = str(p.get("display") or "")
    who = f"{p.get('user', '')}@{p.get('channel', '')}"
    return f"{escape(display)} <span class='note'>({escape(who)})</span>" if display else escape(who)


def _attachments(m: MessageRecord, links: Mapping[str, str]) -> str:
    parts: list[str] = []
    for att in m.attachments:
        name = escape(str(att.get("name") or "attachment"))
        sha = str(att.get("sha256") or "")
        meta = f"{escape(str(att.get('mime', '')))}, {att.get('size', '?')} bytes, sha256 {escape(sha[:16])}…"
        href = links.get(sha)
        if href is None:
            why = att.get("refused") or ("erased" if m.erased else "not in the journal")
            parts.append(f"<div class='attachment missing'>File {name} ({meta}): not included, {escape(str(why))}</div>")
        elif str(att.get("mime", "")).startswith("image/"):
            parts.append(f"<div class='attachment'>File <a href='{escape(href)}'>{name}</a> ({meta})"
                         f"<img class='attachment' src='{escape(href)}' alt='{name}'></div>")
        else:
            parts.append(f"<div class='attachment'>File <a href='{escape(href)}'>{name}</a> ({meta})</div>")
    return "".join(parts)


def _verdict(m: MessageRecord) -> str:
    v = m.verdict
    if v is None:
        return "<span class='note'>no verdict journaled</span>"
    rules = ", ".join(
        f"{escape(str(r.get('rule')))} ({escape(str(r.get('action')))}"
        + (f", {escape(str(r.get('title')))}" if r.get("title") else "") + ")"
        for r in v.get("rules", []))
    out = f"<span class='verdict v-{escape(m.action)}'>{escape(m.action)}</span>"
    if rules:
        out += f"<div class='note'>rules: {rules}</div>"
    for ts, d in m.decisions:
        out += (f"<div class='review'>review: <b>{escape(str(d.get('decision')))}</b> by {escape(str(d.get('reviewer')))}"
                f" at {iso(ts)}" + (f": {escape(str(d.get('reason')))}" if d.get("reason") else "") + "</div>")
    queued = {str(d.get("delivery_id")): d for _, kind, d in m.deliveries if kind == "delivery.queued"}
    for ts, kind, d in m.deliveries:
        q = queued.get(str(d.get("delivery_id")))
        if kind == "message.delivered":
            out += f"<div class='note delivery'>{_delivered(m, q, d)} at {iso(ts)}{_received_text(m, q)}</div>"
        elif kind == "delivery.failed" and d.get("permanent"):
            what = "notice" if q is not None and (q.get("out") or {}).get("kind") == "notice" else "delivery"
            out += f"<div class='note'>{what} failed at {iso(ts)}: {escape(str(d.get('reason')))}</div>"
    return out


def _delivered(m: MessageRecord, queued: Mapping[str, Any] | None, d: Mapping[str, Any]) -> str:
    """What reached whom: the message itself, or a notice sent because of it (e.g. a rejection)."""
    channel = escape(str(d.get("channel")))
    if queued is None:
        return f"delivered to {channel}"
    out = queued.get("out") or {}
    to = queued.get("to") or {}
    who = f" ({escape(str(to.get('user')))})" if to.get("user") else ""
    if out.get("kind") == "notice":
        why = " rejection" if m.action == "block" else ""
        return f"<b>not this message</b>: a{why} notice was delivered to {channel}{who}"
    return f"delivered to {channel}{who}"


def _received_text(m: MessageRecord, queued: Mapping[str, Any] | None) -> str:
    """The text the recipient got, when it is not the text above (redacted, disclaimed, a notice)."""
    if queued is None or m.erased is not None:
        return ""
    text = (queued.get("out") or {}).get("text")
    if not isinstance(text, str) or (text == m.text and (queued.get("out") or {}).get("kind") != "notice"):
        return ""
    return f", as received: <div class='text received'>{escape(text)}</div>"


def highlighted(text: str, verdict: Mapping[str, Any] | None) -> str:
    """The text, escaped, with every span a rule matched marked (`<mark title="RULE">`)."""
    spans: list[tuple[int, int, str]] = []
    for hit in (verdict or {}).get("rules") or []:
        for s, e in hit.get("spans") or []:
            if 0 <= s < e <= len(text):
                spans.append((s, e, str(hit.get("rule"))))
    spans.sort()
    out: list[str] = []
    pos = 0
    for s, e, rule in spans:
        if s < pos:
            continue
        out.append(escape(text[pos:s]))
        out.append(f"<mark title='{escape(rule)}'>{escape(text[s:e])}</mark>")
        pos = e
    out.append(escape(text[pos:]))
    return "".join(out)


def _text(m: MessageRecord, by_id: Mapping[str, MessageRecord]) -> str:
    if m.erased is not None:
        return f"<span class='note'>[content erased {iso(m.erased.get('ts'))}: {escape(str(m.erased.get('reason', '')))}]</span>"
    target = str(m.body.get("edits") or "")
    original = by_id.get(target)
    if m.kind == "delete":
        return f"<span class='note'>deleted message #{original.seq if original else escape(target)}</span>"
    body = f"<div class='text'>{highlighted(m.text, m.verdict)}</div>"
    if m.kind == "edit":
        before = f": was “{escape(original.text)}”" if original is not None and original.erased is None else ""
        ref = f"#{original.seq}" if original else escape(target or str(m.body.get("edits_platform", "")))
        body = f"<div class='note'>edit of message {ref}{before}</div>" + body
    return body


def render_transcript(conversation: str, messages: list[MessageRecord],
                      assignments: list[tuple[float, dict[str, Any]]], links: Mapping[str, str],
                      exported_at: str) -> str:
    """The conversation as a standalone HTML page; `links` maps attachment digests to hrefs."""
    by_id = {m.id: m for m in messages}
    deleted = {str(m.body.get("edits")) for m in messages if m.kind == "delete"}
    edited = {str(m.body.get("edits")) for m in messages if m.kind == "edit"}
    client = next((m.client for m in messages if m.client), {})
    rows: list[tuple[float, int, str]] = []
    for m in messages:
        cls = [m.direction]
        if m.id in deleted:
            cls.append("deleted")
        notes = []
        if m.id in deleted:
            notes.append("deleted by the sender later")
        if m.id in edited:
            notes.append("edited later")
        if m.restricted:
            notes.append("restricted: data-subject erasure request")
        note = f"<div class='note'>{'; '.join(notes)}</div>" if notes else ""
        rows.append((m.ts, m.seq, (
            f"<tr id='m{m.seq}' class='{' '.join(cls)}' data-message-id='{escape(m.id)}'>"
            f"<td>#{m.seq}<br>{iso(m.ts)}</td><td>{escape(m.direction)}<br>{escape(m.kind)}</td>"
            f"<td>{_party(m.sender)}</td>"
            f"<td>{_text(m, by_id)}{_attachments(m, links)}{note}</td><td>{_verdict(m)}</td></tr>")))
    for ts, a in assignments:
        rows.append((ts, -1, (
            f"<tr class='event'><td>{iso(ts)}</td><td colspan='4'>conversation assigned to "
            f"{escape(str(a.get('employee') or 'the desk'))}"
            + (f" (from {escape(str(a.get('previous')))})" if a.get("previous") else "")
            + f" by {escape(str(a.get('actor') or 'relay'))}"
            + (f": {escape(str(a.get('reason')))}" if a.get("reason") else "") + "</td></tr>")))
    rows.sort(key=lambda r: (r[0], r[1]))
    title = f"Conversation {escape(conversation)}"
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{title}</title><style>{CSS}</style></head><body>"
        f"<h1>{title}</h1>"
        f"<p>Client: {_party(client)}. Messages: {len(messages)}. Exported {escape(exported_at)} from the relay journal;"
        " the export's manifest.json lists the SHA-256 of this file and is signed with the journal key.</p>"
        "<table><thead><tr><th>Seq / time (UTC)</th><th>Direction</th><th>From</th><th>Content</th>"
        "<th>Verdict and review</th></tr></thead><tbody>"
        + "".join(r[2] for r in rows)
        + "</tbody></table></body></html>\n")

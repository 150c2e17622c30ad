"""The archive feed: every journaled message, both directions, as the export's RFC 5322 EML, sent
by SMTP journaling to the firm's existing archive (Smarsh, Global Relay, Mimecast, Microsoft 365).

At least once and in journal order (so in order per conversation): a cursor in the journal's
kv store moves past a message only after the SMTP server accepted it and `archive.sent`
(with the server's reply) is journaled, for a batch of sends at a time; a crash in between
re-sends them with the same `Message-ID`, which archives deduplicate on. A refused or failed send is retried with capped
exponential backoff, holding the messages behind it; the first failure of a streak is
journaled (`archive.failed`), alerts compliance and turns the `archive` check red.
A message is sent once its verdict is journaled, or `settle` seconds after it was received.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Awaitable, Callable
from typing import Any, Mapping

import aiosmtplib

from relay.evidence.collect import MessageRecord
from relay.evidence.eml import render_eml

log = logging.getLogger("relay.evidence.archive")
CHECK = "archive"
KV = ("archive", "cursor")


class ArchiveError(Exception):
    """An `archive:` setting that cannot be used; the message names it."""


@dataclass(frozen=True)
class ArchiveSettings:
    host: str
    port: int = 587
    starttls: bool = True
    tls: bool = False
    username: str | None = None
    password: str | None = None
    sender: str = "relay@relay.invalid"
    to: tuple[str, ...] = ()
    ca_file: Path | None = None
    batch: int = 100
    every: float = 2.0
    settle: float = 10.0
    base_delay: float = 1.0
    max_delay: float = 300.0
    timeout: float = 30.0


def settings_of(raw: Mapping[str, Any], base: Path) -> ArchiveSettings | None:
    block = raw.get("archive")
    if block is None:
        return None
    if not isinstance(block, dict) or not block.get("host") or not block.get("to"):
        raise ArchiveError("archive: needs host and to (the archive's journaling address)")
    to = block["to"] if isinstance(block["to"], list) else [block["to"]]
    ca = block.get("ca_file")
    try:
        return ArchiveSettings(
            host=str(block["host"]), port=int(block.get("port", 587)), starttls=bool(block.get("starttls", True)),
            tls=bool(block.get("tls", False)), username=block.get("username"), password=block.get("password"),
            sender=str(block.get("from", "relay@relay.invalid")), to=tuple(str(t) for t in to),
            ca_file=(Path(ca) if Path(ca).is_absolute() else base / ca) if ca else None,
            batch=int(block.get("batch", 100)), every=float(block.get("every", 2.0)),
            settle=float(block.get("settle", 10.0)), base_delay=float(block.get("base_delay", 1.0)),
            max_delay=float(block.get("max_delay", 300.0)), timeout=float(block.get("timeout", 30.0)))
    except (TypeError, ValueError) as exc:
        raise ArchiveError(f"archive: {exc}") from None


async def pending(journal: Any, after: int, limit: int, settle_before: float) -> list[MessageRecord]:
    """Messages after seq `after`, in seq order, up to the first one not yet settled (no verdict
    and younger than `settle`): later ones wait behind it, so the order holds."""
    rows = await journal.fetchall(
        "SELECT e.seq, e.ts, e.conversation, e.body_json, m.action, m.rules_json FROM events e"
        " LEFT JOIN messages m ON m.seq = e.seq WHERE e.seq > ? AND e.kind = 'message.received'"
        " ORDER BY e.seq LIMIT ?", (after, limit))
    out: list[MessageRecord] = []
    for r in rows:
        if r["action"] is None and r["ts"] > settle_before:
            break
        body = json.loads(r["body_json"])
        verdict = None if r["action"] is None else {"action": r["action"], "rules": json.loads(r["rules_json"] or "[]")}
        out.append(MessageRecord(str(body.get("id")), r["seq"], r["ts"], r["conversation"] or "", body, verdict=verdict))
    return out


class ArchiveFeed:
    """One per running relay (`run_archive`); `run_once` sends what is pending."""

    def __init__(self, app: Any, settings: ArchiveSettings,
                 alert: Callable[[Any, str], Awaitable[Any]] | None = None) -> None:
        self.app, self.s, self.alert = app, settings, alert
        self.smtp: aiosmtplib.SMTP | None = None
        self.failing = False
        self.delay = settings.base_delay
        self.sent = 0

    def _tls_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.s.ca_file) if self.s.ca_file else None)
        return ctx

    async def _connect(self) -> aiosmtplib.SMTP:
        if self.smtp is not None and self.smtp.is_connected:
            return self.smtp
        s = self.s
        smtp = aiosmtplib.SMTP(hostname=s.host, port=s.port, use_tls=s.tls, start_tls=s.starttls and not s.tls,
                               tls_context=self._tls_context(), timeout=s.timeout)
        await smtp.connect()
        if s.username:
            await smtp.login(s.username, s.password or "")
        self.smtp = smtp
        return smtp

    async def close(self) -> None:
        if self.smtp is not None:
            try:
                await self.smtp.quit()
            except Exception:
                pass
            self.smtp = None

    async def _blobs(self, m: MessageRecord) -> dict[str, bytes | None]:
        out: dict[str, bytes | None] = {}
        for a in m.attachments:
            sha = str(a.get("sha256") or "")
            if sha and not a.get("refused") and sha not in out:
                out[sha] = await self.app.journal.get_blob(sha)
        return out

    async def run_once(self) -> int:
        """Send every settled message after the cursor; returns how many were accepted. Raises
        on a failed send (the cursor stays before that message)."""
        journal = self.app.journal
        cursor = int(await journal.kv_get(*KV) or 0)
        count = 0
        while True:
            batch = await pending(journal, cursor, self.s.batch, time.time() - self.s.settle)
            if not batch:
                return count
            accepted: list[tuple[str, dict[str, Any], str | None]] = []
            try:
                for m in batch:
                    eml = render_eml(m, await self._blobs(m))
                    smtp = await self._connect()
                    _, reply = await smtp.sendmail(self.s.sender, list(self.s.to), eml)
                    accepted.append(("archive.sent", {
                        "message_id": m.id, "seq": m.seq, "conversation": m.conversation,
                        "eml_message_id": f"<{m.id}@relay.invalid>", "to": list(self.s.to), "reply": reply,
                        "server": f"{self.s.host}:{self.s.port}"}, m.conversation))
                    cursor = m.seq
            finally:
                if accepted:
                    # the sends of a batch are journaled and the cursor moved in one commit; a
                    # crash before it re-sends them (same Message-ID), never skips one
                    await asyncio.gather(journal.append_many(accepted), journal.kv_put(*KV, str(cursor)))
                    count += len(accepted)
                    self.sent += len(accepted)

    async def step(self) -> float:
        """One run; returns the seconds to wait before the next (backoff after a failure)."""
        app = self.app
        try:
            await self.run_once()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self.close()
            why = f"{type(exc).__name__}: {exc}"
            app.health.set_check(CHECK, False, f"archive feed to {self.s.host}:{self.s.port} failing: {why}", time.time())
            if not self.failing:
                self.failing = True
                log.error("archive feed failed (retrying with backoff): %s", why)
                cursor = int(await app.journal.kv_get(*KV) or 0)
                await app.journal.append("archive.failed", {"after_seq": cursor, "error": why,
                                                            "server": f"{self.s.host}:{self.s.port}"})
                if self.alert is not None:
                    try:
                        await self.alert(app, f"[relay archive] feed to {self.s.host}:{self.s.port} failing, retrying: {why}")
                    except Exception:
                        log.exception("cannot alert compliance about the archive feed")
            wait, self.delay = self.delay, min(self.delay * 2, self.s.max_delay)
            return wait
        self.failing = False
        self.delay = self.s.base_delay
        app.health.set_check(CHECK, True, f"{self.sent} messages sent to the archive", time.time())
        app.health.set_gauge("relay_archive_sent", self.sent, "Messages the archive accepted since start.")
        return self.s.every


async def run_feed(app: Any, alert: Callable[[Any, str], Awaitable[Any]]) -> None:
    """Send until cancelled (does nothing without `archive:`); `alert(app, text)` tells compliance."""
    base = app.config.path.parent if app.config.path else Path.cwd()
    settings = settings_of(app.config.raw, base)
    if settings is None:
        return
    feed = ArchiveFeed(app, settings, alert)
    app.archive_feed = feed
    try:
        while True:
            await asyncio.sleep(await feed.step())
    finally:
        await feed.close()

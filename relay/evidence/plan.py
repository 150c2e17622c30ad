"""The first pass of an export: which messages it holds, settled before any file is written.

Whether a message is exported depends on events journaled after it (its verdict's rules, its
erasure), and every event about it follows that answer, so one pass in seq order notes per
message only its id, seq, conversation and flags, and per later event only its seq, in a private
temporary SQLite database (on disk, deleted on close). Memory stays bounded however many messages
the journal holds; the bodies are read again, a chunk at a time, when the files are written.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from typing import Any, Callable, Iterable, Mapping

from relay.evidence.collect import (MESSAGE_REF_KINDS, Ev, ExportFilter, MessageRecord, Reader, attach,
                                    is_restricted, message_matches)
from relay.evidence.scan import Scope, events_at, scan

SCHEMA = """
PRAGMA journal_mode=OFF;
PRAGMA synchronous=OFF;
CREATE TABLE msgs(id TEXT PRIMARY KEY, seq INTEGER NOT NULL UNIQUE, conv TEXT NOT NULL, pre INTEGER NOT NULL,
  rule_hit INTEGER NOT NULL DEFAULT 0, restricted INTEGER NOT NULL, chosen INTEGER NOT NULL DEFAULT 0,
  erased INTEGER NOT NULL DEFAULT 0);
CREATE TABLE refs(msg_seq INTEGER NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY(msg_seq, seq)) WITHOUT ROWID;
CREATE TABLE atts(sha TEXT NOT NULL, msg_seq INTEGER NOT NULL, PRIMARY KEY(sha, msg_seq)) WITHOUT ROWID;
CREATE TABLE erased(seq INTEGER PRIMARY KEY, info TEXT NOT NULL);
CREATE TABLE assigned(seq INTEGER PRIMARY KEY, conv TEXT NOT NULL, ts REAL NOT NULL, body TEXT NOT NULL);
CREATE INDEX assigned_conv ON assigned(conv, seq);
CREATE TABLE picked(seq INTEGER PRIMARY KEY);
CREATE TABLE linked(sha TEXT PRIMARY KEY, href TEXT NOT NULL);
"""

Progress = Callable[[int], None]


class Plan:
    """What an export holds, answered by query; `build` fills it, `close` deletes it."""

    def __init__(self, flt: ExportFilter, restricted: Mapping[str, int], include_restricted: bool) -> None:
        self.flt = flt
        self._flt_no_rule = dataclasses.replace(flt, rule=None)
        self.restricted = restricted
        self.include_restricted = include_restricted
        self.withheld_assignments = 0
        self.db = sqlite3.connect("", isolation_level=None)  # "": a private temporary file
        self.db.executescript(SCHEMA)
        self.head: tuple[int, str] = (0, "")
        self.withheld = 0
        self.messages = 0
        self.conversations: list[str] = []

    def close(self) -> None:
        self.db.close()

    # --- the pass ------------------------------------------------------------------------

    async def build(self, reader: Reader, scope: Scope, progress: Progress | None = None) -> None:
        seen = 0
        async for batch in scan(reader, scope):
            self.db.execute("BEGIN")
            for ev in batch:
                self._note(ev)
            self.db.execute("COMMIT")
            self.head = (batch[-1].seq, batch[-1].hash)
            seen += len(batch)
            if progress is not None:
                progress(seen)
        self._settle()

    def _note(self, ev: Ev) -> None:
        db = self.db
        if ev.kind == "message.received":
            rec = MessageRecord(str(ev.body.get("id")), ev.seq, ev.ts, ev.conversation or "", ev.body)
            db.execute("INSERT OR REPLACE INTO msgs(id, seq, conv, pre, restricted) VALUES (?, ?, ?, ?, ?)",
                       (rec.id, ev.seq, rec.conversation, message_matches(rec, self._flt_no_rule),
                        is_restricted(ev.seq, rec.client, self.restricted)))
            db.executemany("INSERT OR IGNORE INTO atts(sha, msg_seq) VALUES (?, ?)",
                           [(sha, ev.seq) for sha in attachment_shas(rec)])
        elif ev.kind in MESSAGE_REF_KINDS:
            mid = ev.body.get("message_id")
            row = None if mid is None else db.execute("SELECT seq FROM msgs WHERE id = ?", (str(mid),)).fetchone()
            if row is None:
                return
            db.execute("INSERT OR IGNORE INTO refs(msg_seq, seq) VALUES (?, ?)", (row[0], ev.seq))
            if self.flt.rule and ev.kind == "policy.verdict" and not ev.body.get("shadow"):
                rules = [str(r.get("rule")) for r in ev.body.get("rules", [])]
                db.execute("UPDATE msgs SET rule_hit = ? WHERE seq = ?", (self.flt.rule in rules, row[0]))
        elif ev.kind == "conversation.assigned":
            cid = ev.body.get("conversation") or ev.conversation
            if self.withholds_assignment(ev):
                self.withheld_assignments += 1  # it names the client as they called themselves
                return
            if isinstance(cid, str):
                db.execute("INSERT INTO assigned(seq, conv, ts, body) VALUES (?, ?, ?, ?)",
                           (ev.seq, cid, ev.ts, json.dumps(ev.body)))
        elif ev.kind == "retention.erased":
            info = json.dumps({"seq": ev.seq, "ts": ev.ts, "reason": ev.body.get("reason", ""),
                               "actor": ev.body.get("actor", "")})
            db.executemany("INSERT OR REPLACE INTO erased(seq, info) VALUES (?, ?)",
                           [(int(s), info) for s in ev.body.get("seqs", [])])

    def _settle(self) -> None:
        db = self.db
        matched = "pre AND rule_hit" if self.flt.rule else "pre"
        db.execute("BEGIN")
        db.execute("UPDATE msgs SET erased = 1 WHERE seq IN (SELECT seq FROM erased)")
        if not self.include_restricted:
            self.withheld = db.execute(f"SELECT COUNT(*) FROM msgs WHERE {matched} AND restricted").fetchone()[0]
            db.execute(f"UPDATE msgs SET chosen = 1 WHERE {matched} AND NOT restricted")
        else:
            db.execute(f"UPDATE msgs SET chosen = 1 WHERE {matched}")
        db.execute("CREATE INDEX msgs_chosen ON msgs(conv, seq) WHERE chosen")
        db.execute("COMMIT")
        self.messages = db.execute("SELECT COUNT(*) FROM msgs WHERE chosen").fetchone()[0]
        self.conversations = [r[0] for r in db.execute(
            "SELECT conv FROM msgs WHERE chosen GROUP BY conv ORDER BY MIN(seq)")]

    # --- answers for the writing passes ----------------------------------------------------

    def withholds_assignment(self, ev: Ev) -> bool:
        """An assignment from before the client's erasure request names them by their display
        name; a chained body cannot be trimmed, so it is left out (unless restricted content is
        included)."""
        return not self.include_restricted and is_restricted(ev.seq, ev.body.get("client"), self.restricted)

    def chosen_ids(self, ids: Iterable[str]) -> dict[str, int]:
        """Of these message ids, the exported ones → the seq of the message exported under it."""
        wanted = sorted(set(ids))
        out: dict[str, int] = {}
        for i in range(0, len(wanted), 500):
            part = wanted[i:i + 500]
            out.update(self.db.execute(f"SELECT id, seq FROM msgs WHERE chosen AND id IN ({','.join('?' * len(part))})",
                                       part).fetchall())
        return out

    def conversation_chosen(self, conv: str) -> bool:
        return self.db.execute("SELECT 1 FROM msgs WHERE chosen AND conv = ? LIMIT 1", (conv,)).fetchone() is not None

    def pick(self, seq: int) -> None:
        self.db.execute("INSERT OR IGNORE INTO picked(seq) VALUES (?)", (seq,))

    def any_picked(self, seqs: Iterable[Any]) -> bool:
        return any(self.db.execute("SELECT 1 FROM picked WHERE seq = ?", (int(s),)).fetchone() for s in seqs)

    def erased(self, seq: int) -> dict[str, Any] | None:
        row = self.db.execute("SELECT info FROM erased WHERE seq = ?", (seq,)).fetchone()
        return json.loads(row[0]) if row else None

    def exported_blob(self, sha: str) -> bool:
        """An attachment digest of some exported message that is not erased: its bytes go into
        the export (and serve every message naming that digest)."""
        return self.db.execute(
            "SELECT 1 FROM atts a JOIN msgs m ON m.seq = a.msg_seq WHERE a.sha = ? AND m.chosen AND NOT m.erased LIMIT 1",
            (sha,)).fetchone() is not None

    def link(self, sha: str, href: str) -> None:
        self.db.execute("INSERT INTO linked(sha, href) VALUES (?, ?)", (sha, href))

    def href(self, sha: str) -> str | None:
        row = self.db.execute("SELECT href FROM linked WHERE sha = ?", (sha,)).fetchone()
        return row[0] if row else None

    def message_seqs(self, conv: str, after: int, limit: int) -> list[int]:
        return [r[0] for r in self.db.execute(
            "SELECT seq FROM msgs WHERE chosen AND conv = ? AND seq > ? ORDER BY seq LIMIT ?", (conv, after, limit))]

    def assignments(self, conv: str) -> list[tuple[float, dict[str, Any]]]:
        return [(r[0], json.loads(r[1])) for r in self.db.execute(
            "SELECT ts, body FROM assigned WHERE conv = ? ORDER BY seq", (conv,))]

    async def records(self, reader: Reader, seqs: list[int]) -> list[MessageRecord]:
        """The exported messages at these seqs with their verdicts, decisions, deliveries and erasure."""
        marks = ",".join("?" * len(seqs))
        refs = self.db.execute(f"SELECT msg_seq, seq FROM refs WHERE msg_seq IN ({marks}) ORDER BY seq", seqs).fetchall()
        flags = dict(self.db.execute(f"SELECT seq, restricted FROM msgs WHERE seq IN ({marks})", seqs).fetchall())
        evs = await events_at(reader, sorted({*seqs, *(r[1] for r in refs)}))
        recs: dict[int, MessageRecord] = {}
        for seq in seqs:
            ev = evs[seq]
            recs[seq] = MessageRecord(str(ev.body.get("id")), ev.seq, ev.ts, ev.conversation or "", ev.body,
                                      erased=self.erased(seq), restricted=bool(flags.get(seq)))
        for msg_seq, seq in refs:
            attach(recs[msg_seq], evs[seq])
        return [recs[s] for s in seqs]


def attachment_shas(m: MessageRecord) -> list[str]:
    return [sha for sha in (str(a.get("sha256") or "") for a in m.attachments) if sha]

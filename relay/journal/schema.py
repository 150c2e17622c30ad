"""Table definitions: the chained `events`, bookkeeping (`meta`, `kv`) and the derived projections.

`messages.rowid` is the event seq (as is `messages_fts.rowid`), so joins and range scans by seq
need no extra index; the partial indexes hold only open work (queued deliveries, open reviews).
`events_conversation` lets a conversation's whole timeline (console, transcript) be read without a scan.
The desk's history reads a message's deliveries and edits and an employee's conversations by index
(by employee alone: `last_seq` changes with every message, an index on it would too).
"""

from __future__ import annotations

import sqlite3

CORE = """
CREATE TABLE IF NOT EXISTS events(
  seq INTEGER PRIMARY KEY, ts REAL NOT NULL, kind TEXT NOT NULL, conversation TEXT,
  body_json TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS events_retention_erased ON events(seq) WHERE kind='retention.erased';
CREATE INDEX IF NOT EXISTS events_checkpoint ON events(seq) WHERE kind='checkpoint';
CREATE INDEX IF NOT EXISTS events_compliance_state ON events(seq)
  WHERE kind IN ('hold.added', 'hold.released', 'erasure.requested');
CREATE INDEX IF NOT EXISTS events_conversation ON events(conversation, seq);
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS kv(namespace TEXT NOT NULL, key TEXT NOT NULL, value TEXT,
  PRIMARY KEY(namespace, key));
"""

PROJECTIONS = """
CREATE TABLE IF NOT EXISTS messages(
  id TEXT PRIMARY KEY, seq INTEGER, conversation TEXT, direction TEXT, channel TEXT,
  platform_id TEXT, chat TEXT, sender_channel TEXT, sender_user TEXT, sender_display TEXT,
  kind TEXT, text TEXT, edits TEXT, reply_to TEXT, attachments_json TEXT, ts REAL,
  action TEXT, rules_json TEXT, employee TEXT, erased INTEGER DEFAULT 0, verdict_seq INTEGER,
  UNIQUE(channel, platform_id));
CREATE INDEX IF NOT EXISTS messages_conversation ON messages(conversation, seq);
CREATE INDEX IF NOT EXISTS messages_edits ON messages(edits) WHERE edits IS NOT NULL;
CREATE INDEX IF NOT EXISTS messages_receipts ON messages(reply_to) WHERE kind = 'event';
CREATE TABLE IF NOT EXISTS conversations(
  id TEXT PRIMARY KEY, client_channel TEXT, client_user TEXT, client_display TEXT,
  employee TEXT, opened_seq INTEGER, last_seq INTEGER, first_outbound_seq INTEGER);
CREATE INDEX IF NOT EXISTS conversations_employee ON conversations(employee, opened_seq);
CREATE INDEX IF NOT EXISTS conversations_client_channel ON conversations(client_channel);
CREATE TABLE IF NOT EXISTS deliveries(
  delivery_id TEXT PRIMARY KEY, seq INTEGER, message_id TEXT, conversation TEXT, channel TEXT,
  to_json TEXT, out_json TEXT, state TEXT, platform_id TEXT, attempts INTEGER DEFAULT 0,
  reason TEXT);
CREATE INDEX IF NOT EXISTS deliveries_queued ON deliveries(seq) WHERE state='queued';
CREATE INDEX IF NOT EXISTS deliveries_platform ON deliveries(channel, platform_id);
CREATE INDEX IF NOT EXISTS deliveries_message ON deliveries(message_id, channel, seq);
CREATE INDEX IF NOT EXISTS deliveries_conversation ON deliveries(conversation, channel, seq);
CREATE TABLE IF NOT EXISTS review_queue(
  message_id TEXT PRIMARY KEY, seq INTEGER, conversation TEXT, action TEXT, rules_json TEXT,
  state TEXT, decided_by TEXT, decision TEXT, reason TEXT, decided_seq INTEGER);
CREATE INDEX IF NOT EXISTS review_queue_open ON review_queue(seq) WHERE state='open';
CREATE INDEX IF NOT EXISTS review_queue_pending ON review_queue(seq) WHERE state!='decided';
CREATE TABLE IF NOT EXISTS review_decisions(seq INTEGER PRIMARY KEY, message_id TEXT);
CREATE INDEX IF NOT EXISTS review_decisions_message ON review_decisions(message_id, seq);
CREATE TABLE IF NOT EXISTS policy_loads(seq INTEGER PRIMARY KEY, version TEXT, shadow INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS policy_loads_latest ON policy_loads(shadow, seq);
CREATE TABLE IF NOT EXISTS reviewer_decisions(
  reviewer TEXT NOT NULL, decision TEXT NOT NULL, n INTEGER NOT NULL, PRIMARY KEY(reviewer, decision));
CREATE VIRTUAL TABLE IF NOT EXISTS messages_fts USING fts5(text, tokenize='trigram');
"""

PROJECTION_TABLES = ("messages", "conversations", "deliveries", "review_queue", "review_decisions", "policy_loads",
                     "reviewer_decisions", "messages_fts")
PROJECTIONS_VERSION = "3"
"""`meta.projections`: bumped whenever the projection tables or what they hold change; a journal
written with another version has its projections rebuilt from the events when the writer opens it.
2: messages.verdict_seq, review_decisions, policy_loads, indexes for receipts, replies, handover (issue 12).
3: reviewer_decisions (every decision counted per reviewer, the console's dashboard; issue 11)."""


def create_all(db: sqlite3.Connection) -> None:
    db.executescript(CORE + PROJECTIONS)


def projections_current(db: sqlite3.Connection) -> bool:
    row = db.execute("SELECT value FROM meta WHERE key='projections'").fetchone()
    return row is not None and row[0] == PROJECTIONS_VERSION


def mark_projections(db: sqlite3.Connection) -> None:
    db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES('projections', ?)", (PROJECTIONS_VERSION,))


def drop_projections(db: sqlite3.Connection) -> None:
    for table in PROJECTION_TABLES:
        db.execute(f"DROP TABLE IF EXISTS {table}")

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
  action TEXT, rules_json TEXT, employee TEXT, erased INTEGER DEFAULT 0,
  UNIQUE(channel, platform_id));
CREATE INDEX IF NOT EXISTS messages_conversation ON messages(conversation, seq);
CREATE INDEX IF NOT EXISTS messages_edits ON messages(edits) WHERE edits IS NOT NULL;
CREATE INDEX IF NOT EXISTS messages_receipts ON messages(reply_to) WHERE kind = 'event';
CREATE TABLE IF NOT EXISTS conversations(
  id TEXT PRIMARY KEY, client_channel TEXT, client_user TEXT, client_display TEXT,
  employee TEXT, opened_seq INTEGER, last_seq INTEGER, first_outbound_seq INTEGER);
CREATE INDEX IF NOT EXISTS conversations_employee ON conversations(employee);
CREATE TABLE IF NOT EXISTS deliveries(
  delivery_id TEXT PRIMARY KEY, seq INTEGER, message_id TEXT, conversation TEXT, channel TEXT,
  to_json TEXT, out_json TEXT, state TEXT, platform_id TEXT, attempts INTEGER DEFAULT 0,
  reason TEXT);
CREATE INDEX IF NOT EXISTS deliveries_queued ON deliveries(seq) WHERE state='queued';
CREATE INDEX IF NOT EXISTS deliveries_message ON deliveries(message_id);
CREATE TABLE IF NOT EXISTS review_queue(
  message_id TEXT PRIMARY KEY, seq INTEGER, conversation TEXT, action TEXT, rules_json TEXT,
  state TEXT, decided_by TEXT, decision TEXT, reason TEXT, decided_seq INTEGER);
CREATE INDEX IF NOT EXISTS review_queue_open ON review_queue(seq) WHERE state='open';
CREATE VIRTUAL TABLE IF NOT EXISTS messages_fts USING fts5(text, tokenize='trigram');
"""

PROJECTION_TABLES = ("messages", "conversations", "deliveries", "review_queue", "messages_fts")


def create_all(db: sqlite3.Connection) -> None:
    db.executescript(CORE + PROJECTIONS)


def drop_projections(db: sqlite3.Connection) -> None:
    for table in PROJECTION_TABLES:
        db.execute(f"DROP TABLE IF EXISTS {table}")

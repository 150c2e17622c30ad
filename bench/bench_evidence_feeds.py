"""The WORM copy and the archive feed against an evidence export of the same messages, one run.

One journal of MESSAGES messages as the hub writes them (message.received with an inline raw
payload or, for one in four, a raw blob and an attachment; policy.verdict; delivery.queued;
message.delivered). Baseline: `write_export` of all of them in all formats (JSON lines, EML,
HTML). Then the directory WORM copy of the same journal (every event, blob and checkpoint),
and the archive feed sending every message as EML to an aiosmtpd server on loopback (each
send journaled as archive.sent with the cursor, as in `relay run`).
"""

from __future__ import annotations

import asyncio
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from aiosmtpd.controller import Controller

from relay.evidence import ExportFilter, write_export
from relay.evidence.archive import ArchiveFeed, ArchiveSettings
from relay.evidence.keys import load_private_key
from relay.health import Health
from relay.journal import Journal, replica

MESSAGES = 600
RUNS = 3


async def _build(data: Path) -> None:
    j = await Journal.open(data, synchronous="OFF")
    client = {"channel": "webchat", "user": "client-1", "display": "Client One"}
    for i in range(MESSAGES):
        conv = f"c-{i % 20}"
        mid = f"m-{i:06d}"
        body: dict[str, Any] = {
            "id": mid, "direction": "inbound" if i % 2 else "outbound", "channel": "webchat",
            "platform_id": f"p-{i}", "chat": conv, "kind": "message", "sender": client,
            "text": f"Message {i}: please confirm the transfer of 1,000 shares, thank you 谢谢", "attachments": [],
            "reply_to": None, "edits": None, "sent_at": 1.7e9 + i, "client": client, "employee": "alice"}
        if i % 4 == 0:
            body["raw_sha256"] = await j.put_blob(f"raw update {i}".encode() * 40)
            sha = await j.put_blob(f"attachment {i}".encode() * 500)
            body["attachments"] = [{"name": f"statement-{i}.pdf", "mime": "application/pdf", "size": 6000,
                                    "sha256": sha, "platform_ref": "", "refused": ""}]
        else:
            body["raw_inline"], body["raw_digest"] = "eyJ1cGRhdGVfaWQiOiAxfQ==", "ab" * 32
        did = f"d-{i:06d}"
        await j.append_many([
            ("message.received", body, conv),
            ("policy.verdict", {"message_id": mid, "action": "allow", "review": False, "rules": [], "disclaimers": [],
                                "redactions": [], "policy_version": "v1"}, conv),
            ("delivery.queued", {"delivery_id": did, "message_id": mid, "channel": "webdesk",
                                 "to": {"channel": "webdesk", "user": "alice", "display": "Alice"},
                                 "out": {"kind": "message", "text": "x", "attachments": [], "origin": client,
                                         "client": client, "action": "allow", "rules": []}}, conv),
            ("message.delivered", {"delivery_id": did, "message_id": mid, "channel": "webdesk",
                                   "platform_id": f"w-{i}", "attempt": 1}, conv),
        ])
    await j.close()


class _Sink:
    def __init__(self) -> None:
        self.count = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.count += 1
        return "250 2.0.0 Ok"


async def _export(data: Path, out: Path) -> float:
    j = await Journal.open(data, read_only=True)
    try:
        t = time.perf_counter()
        await write_export(j, out, ExportFilter(), load_private_key(data / "keys" / "journal_ed25519"))
        return time.perf_counter() - t
    finally:
        await j.close()


async def _copy(data: Path, target: Path) -> float:
    j = await Journal.open(data, read_only=True)
    try:
        t = time.perf_counter()
        result = await replica.sync(j, replica.DirectoryTarget(target))
        elapsed = time.perf_counter() - t
    finally:
        await j.close()
    assert result.head > 0
    return elapsed


async def _archive(data: Path, port: int, sink: _Sink) -> float:
    j = await Journal.open(data)
    try:
        await j.kv_put("archive", "cursor", None)
        app = SimpleNamespace(journal=j, health=Health())
        feed = ArchiveFeed(app, ArchiveSettings(host="127.0.0.1", port=port, starttls=False, to=("journal@archive.test",),
                                                settle=0.0, batch=200))
        before = sink.count
        t = time.perf_counter()
        sent = await feed.run_once()
        elapsed = time.perf_counter() - t
        await feed.close()
    finally:
        await j.close()
    assert sent == MESSAGES and sink.count - before == MESSAGES, (sent, sink.count - before)
    return elapsed


async def _run() -> tuple[list[float], list[float], list[float]]:
    exports, copies, feeds = [], [], []
    sink = _Sink()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-feeds-") as tmp:
            root = Path(tmp)
            await _build(root / "data")
            for run in range(RUNS):  # interleaved: all three see the same machine load
                exports.append(await _export(root / "data", root / f"export-{run}"))
                copies.append(await _copy(root / "data", root / f"copy-{run}"))
                feeds.append(await _archive(root / "data", port, sink))
    finally:
        controller.stop()
    return exports, copies, feeds


def main() -> None:
    exports, copies, feeds = asyncio.run(_run())
    e, c, f = statistics.median(exports), statistics.median(copies), statistics.median(feeds)
    print(f"evidence feeds ({MESSAGES} messages, median of {RUNS}): export (jsonl+eml+html) {MESSAGES / e:.0f} msg/s; "
          f"WORM copy (directory) {MESSAGES / c:.0f} msg/s, ratio {e / c:.1f}x export; "
          f"archive feed (SMTP, journaled) {MESSAGES / f:.0f} msg/s, ratio {e / f:.2f}x export")
    sys.stdout.flush()


if __name__ == "__main__":
    main()

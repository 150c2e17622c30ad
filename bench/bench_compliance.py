"""Evidence search speed on a journal of 20,000 messages, export speed on 2,000.

Search: the FTS5 trigram index (what `relay journal search` uses) against a LIKE scan of every
message (the baseline a tokenizer-less design would need for CJK), median of 5 runs each, for a
Latin phrase and a Japanese term. Export: messages per second written as JSON lines + EML + HTML
with a signed manifest, against JSON lines alone (the baseline), and against the same export
with every EML rendered by the standard library's email package (the writer it replaced).
"""

from __future__ import annotations

import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.calibration import calibration_us, cpu_figure, process_cpu  # noqa: E402
from relay.evidence import ExportFilter, SearchQuery, search, write_export  # noqa: E402
from relay.evidence.keys import load_private_key  # noqa: E402
from relay.journal import Journal  # noqa: E402

MESSAGES = 20_000
EXPORTED = 2_000
RUNS = 5
WORDS = ("bond", "allocation", "settlement", "coupon", "trade", "auction", "yield", "fund", "price", "order",
         "株価", "債券", "取引", "利回り", "決済", "注文", "价格", "基金")


async def build(data: Path, count: int = MESSAGES) -> None:
    rng = random.Random(7)
    j = await Journal.open(data, checkpoint_every=100_000, synchronous="NORMAL")
    batch = []
    for i in range(count):
        conv = f"c-{i % 400:04d}"
        text = " ".join(rng.choice(WORDS) for _ in range(12))
        if i % 997 == 0:
            text += " guaranteed return on the 新規公開株 allocation"
        client = {"channel": "webchat", "user": f"u{i % 400}", "display": f"Client {i % 400}"}
        mid = f"m-{i:06d}"
        batch.append(("message.received", {"id": mid, "direction": "inbound", "channel": "webchat",
                                           "platform_id": str(i), "chat": conv, "kind": "message", "sender": client,
                                           "text": text, "attachments": [], "reply_to": None, "edits": None,
                                           "sent_at": None, "raw_sha256": "", "client": client, "employee": "alice"},
                      conv))
        batch.append(("policy.verdict", {"message_id": mid, "action": "allow", "review": False, "rules": [],
                                         "disclaimers": [], "redactions": [], "policy_version": "v"}, conv))
        if len(batch) >= 2000:
            await j.append_many(batch)
            batch = []
    if batch:
        await j.append_many(batch)
    await j.close()


async def time_search(j: Journal, text: str, like: bool) -> tuple[float, int]:
    q = SearchQuery(text=text, limit=100_000)
    if like:
        rows = await j.fetchall("SELECT id FROM messages WHERE text LIKE ?", (f"%{text}%",))
        t0 = time.perf_counter()
        rows = await j.fetchall("SELECT id FROM messages WHERE text LIKE ?", (f"%{text}%",))
        return time.perf_counter() - t0, len(rows)
    t0 = time.perf_counter()
    hits = await search(j, q)
    return time.perf_counter() - t0, len(hits)


async def run() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        await build(data)
        j = await Journal.open(data, read_only=True)
        try:
            for text in ("guaranteed return", "新規公開株"):
                fts = [await time_search(j, text, False) for _ in range(RUNS)]
                scan = [await time_search(j, text, True) for _ in range(RUNS)]
                assert fts[0][1] == scan[0][1], (fts[0][1], scan[0][1])
                f, s = statistics.median(x[0] for x in fts), statistics.median(x[0] for x in scan)
                print(f"search {text!r} over {MESSAGES} messages: FTS5 trigram {f * 1000:.2f} ms, LIKE scan"
                      f" {s * 1000:.2f} ms ({fts[0][1]} hits); ratio {s / f:.1f}x faster")
        finally:
            await j.close()
        data = Path(tmp) / "small"
        await build(data, EXPORTED)
        j = await Journal.open(data, read_only=True)
        try:
            key = load_private_key(data / "keys" / "journal_ed25519")
            base, full, cpu = [], [], []
            for n in range(3):
                t0 = time.perf_counter()
                await write_export(j, Path(tmp) / f"b{n}", ExportFilter(), key, formats=("jsonl",))
                base.append(time.perf_counter() - t0)
                t0, c0 = time.perf_counter(), process_cpu()
                await write_export(j, Path(tmp) / f"f{n}", ExportFilter(), key)
                full.append(time.perf_counter() - t0)
                cpu.append((process_cpu() - c0) / EXPORTED * 1e6)
            import relay.evidence.writers as writers
            from relay.evidence.eml import render_with_email

            direct, writers.render_eml = writers.render_eml, lambda m, blobs: render_with_email(m, blobs)
            try:
                t0 = time.perf_counter()
                await write_export(j, Path(tmp) / "old", ExportFilter(), key)
                old = time.perf_counter() - t0
            finally:
                writers.render_eml = direct
            b, f = statistics.median(base), statistics.median(full)
            print(f"export {EXPORTED} messages: JSON lines {EXPORTED / b:,.0f} msg/s; all three formats + signed manifest"
                  f" {EXPORTED / f:,.0f} msg/s; ratio {f / b:.2f}x the JSON-lines time;"
                  f" all formats {cpu_figure(statistics.median(cpu), calibration_us())}")
            print(f"export: all formats with every EML through the email package (the writer before issue 12)"
                  f" {EXPORTED / old:,.0f} msg/s: the direct EML writer is {old / f:.1f}x faster")
        finally:
            await j.close()


def main() -> None:
    asyncio.run(run())


if __name__ == "__main__":
    main()

"""A NUL in a message hides nothing from `relay journal search`; the journal keeps the exact text."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.journal_support import jopen, received  # noqa: F401  (jopen is a fixture)
from tests.test_journal_cli import relay

TEXT = "prefix\u0000 zebrasecret"


async def test_text_after_a_nul_is_found_and_kept_exactly(tmp_path: Path, jopen: Any) -> None:
    data = tmp_path / "data"
    j = await jopen(data)
    await j.append("message.received", received("m1", TEXT), "c-1")
    await j.append("message.received", received("m2", "nothing to see"), "c-2")
    [row] = await j.fetchall("SELECT text FROM messages WHERE id = 'm1'")
    assert row["text"] == TEXT
    [event] = await j.fetchall("SELECT body_json FROM events WHERE seq = 1")
    assert json.loads(event["body_json"])["text"] == TEXT
    await j.rebuild()
    await j.close()
    for query in ("zebrasecret", "ZEBRA", "ze", "prefix zebra"):
        out = relay("search", query, "--data-dir", str(data), "--json")
        assert out.returncode == 0, out.stderr
        hits = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
        assert [h["id"] for h in hits] == ["m1"], (query, out.stdout)

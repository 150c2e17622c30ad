"""The streaming export writes the same bytes as the in-memory export did, with bounded memory.

`tests/fixtures/export_golden/` holds a small journal (erasures, an erasure request, shared
attachments, a review, a permanent delivery failure, checkpoints) and, per filter in `cases.json`,
the export the in-memory code wrote for it (made by `make_golden.py` before streaming). The one
difference allowed is the MIME boundary of an EML file with attachments, which the standard
library draws at random on every rendering.
"""

from __future__ import annotations

import json
import re
import shutil
from datetime import datetime
from pathlib import Path

import pytest

from relay.evidence import ExportFilter, verify_export, write_export
from relay.evidence.keys import load_private_key, load_public_key
from relay.journal import Journal
from relay.compliance.holds import load_state

GOLDEN = Path(__file__).resolve().parent / "fixtures" / "export_golden"
BOUNDARY = re.compile(rb"={15}\d+(?:\.\d+)?==")
CASES = json.loads((GOLDEN / "cases.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def golden_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("golden") / "data"
    shutil.copytree(GOLDEN / "journal", data)
    return data


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
async def test_export_is_byte_identical_to_the_in_memory_export(case: dict, golden_data: Path, tmp_path: Path) -> None:
    expected = json.loads((GOLDEN / "expected" / case["name"] / "manifest.json").read_bytes())
    now = datetime.fromisoformat(expected["created"].replace("Z", "+00:00")).timestamp()
    out = tmp_path / "out"
    j = await Journal.open(golden_data, read_only=True)
    try:
        restricted = (await load_state(j))[1] if case["restricted"] else {}
        res = await write_export(j, out, ExportFilter(**case["filter"]), load_private_key(golden_data / "keys" / "journal_ed25519"),
                                 formats=tuple(case["formats"]), restricted_clients=restricted,
                                 include_restricted=case.get("include_restricted", False), actor=case.get("actor", ""),
                                 now=now)
    finally:
        await j.close()
    want = GOLDEN / "expected" / case["name"]
    assert files_under(out) == files_under(want)
    for rel in files_under(want):
        got, expected_file = (out / rel).read_bytes(), (want / rel).read_bytes()
        if rel == "manifest.json":
            assert _meta(got) == _meta(expected_file)
        elif rel.endswith(".eml"):
            assert masked(got) == masked(expected_file), rel
        else:
            assert got == expected_file, rel
    report = verify_export(out, load_public_key(str(golden_data / "keys" / "journal_ed25519.pub")))
    assert report.ok, report.problems
    assert report.events == (res.manifest["counts"]["events"] if "jsonl" in case["formats"] else 0)


def files_under(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def masked(eml: bytes) -> bytes:
    return BOUNDARY.sub(b"BOUNDARY", eml)


def _meta(manifest: bytes) -> dict:
    """The manifest without what an EML's random boundary changes (its digest, the signature)."""
    m = json.loads(manifest)
    m["files"] = {rel: ("eml" if rel.endswith(".eml") else sha) for rel, sha in m["files"].items()}
    m.pop("signature")
    return m


MESSAGES = 2400
CONVERSATIONS = 60


async def big_journal(data: Path) -> int:
    """MESSAGES messages of about 4 KiB across CONVERSATIONS conversations, as the hub journals
    them (received, verdict, queued with a copy of the text, delivered); returns the total size
    of the event bodies."""
    j = await Journal.open(data, synchronous="OFF", checkpoint_every=5000)
    try:
        batch: list[tuple[str, dict, str | None]] = []
        for n in range(MESSAGES):
            conv = f"c-{n % CONVERSATIONS:03d}"
            client = {"channel": "webchat", "user": f"client{n % CONVERSATIONS}", "display": ""}
            inbound = n % 3 != 2
            sender = client if inbound else {"channel": "webdesk", "user": "alice", "display": "Alice"}
            text = f"message {n}: " + (f"{n:06d} quarterly figures and account notes " * 90)
            mid = f"m-{n:06d}"
            batch.append(("message.received", {
                "id": mid, "direction": "inbound" if inbound else "outbound", "channel": sender["channel"],
                "platform_id": f"p-{n}", "chat": conv, "kind": "message", "sender": sender, "text": text,
                "attachments": [], "reply_to": None, "edits": None, "sent_at": None, "client": client,
                "employee": "alice"}, conv))
            batch.append(("policy.verdict", {"message_id": mid, "action": "allow", "review": False, "rules": [],
                                             "disclaimers": [], "redactions": [], "policy_version": "v1"}, conv))
            batch.append(("delivery.queued", {"delivery_id": f"d-{n}", "message_id": mid, "channel": "webdesk",
                                              "to": client, "out": {"kind": "message", "text": text, "client": client}}, conv))
            batch.append(("message.delivered", {"delivery_id": f"d-{n}", "message_id": mid, "channel": "webdesk",
                                                "platform_id": f"out-{n}", "attempt": 1}, conv))
            if len(batch) >= 400:
                await j.append_many(batch)
                batch = []
        if batch:
            await j.append_many(batch)
        total = (await j.fetchall("SELECT SUM(LENGTH(body_json)) AS n FROM events"))[0]["n"]
    finally:
        await j.close()
    return int(total)


async def test_a_large_export_streams_in_bounded_memory(tmp_path: Path) -> None:
    import tracemalloc
    data = tmp_path / "data"
    bodies = await big_journal(data)
    assert bodies > 20_000_000
    lines: list[str] = []
    j = await Journal.open(data, read_only=True)
    try:
        tracemalloc.start()
        try:
            res = await write_export(j, tmp_path / "out", ExportFilter(), load_private_key(data / "keys" / "journal_ed25519"),
                                     progress=lines.append, progress_every=1000)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    finally:
        await j.close()
    counts = res.manifest["counts"]
    assert counts["messages"] == MESSAGES and counts["conversations"] == CONVERSATIONS
    assert counts["events"] == res.manifest["head"]["seq"] > 4 * MESSAGES  # the whole chain, with its checkpoints
    # The in-memory export peaked at 54 MB here, 2.6 times the 20.5 MB of bodies; this one holds a
    # chunk of events, one conversation (40 messages) and the manifest's file list: about 3 MB.
    assert peak < bodies / 5, (peak, bodies)
    assert "read 9000 events of at most 9602" in lines and "wrote 2000 of 2400 messages" in lines
    assert verify_export(tmp_path / "out", load_public_key(str(tmp_path / "data" / "keys" / "journal_ed25519.pub"))).ok


async def test_an_erasure_during_the_export_is_refused_not_signed(tmp_path: Path) -> None:
    """Retention erases messages between the export's passes: the bodies written would be
    tombstones whose erasure record lies past the export's head, so the export is refused
    (no manifest) rather than signed and failing verification later."""
    import asyncio
    import time

    from relay.evidence import ExportError
    from relay.compliance.erasure import run_retention
    from relay.compliance.retention import YEAR, retention_settings
    from tests.compliance_support import History, party

    j = await Journal.open(tmp_path / "data")
    try:
        h = History(j)
        for n in range(30):
            await h.message(f"m{n}", "c-1", "inbound", f"message {n}", client=party("webchat", "zoe", "Zoe"))
        erasing: list[asyncio.Task[object]] = []

        def progress(line: str) -> None:
            if not erasing:  # after the first pass has fixed the head
                erasing.append(asyncio.get_running_loop().create_task(
                    run_retention(j, retention_settings({"default": "1d"}), "ops", at=time.time() + YEAR)))

        key = load_private_key(tmp_path / "data" / "keys" / "journal_ed25519")
        with pytest.raises(ExportError, match="retention erased events while the export was written"):
            await write_export(j, tmp_path / "out", ExportFilter(), key, formats=("jsonl",),
                               progress=progress, progress_every=1)
        assert erasing and (await erasing[0])["erased"]["messages"] == 30
        assert not (tmp_path / "out" / "manifest.json").exists()
        again = await write_export(j, tmp_path / "again", ExportFilter(), key, formats=("jsonl",))
        report = verify_export(tmp_path / "again", load_public_key(str(tmp_path / "data" / "keys" / "journal_ed25519.pub")))
        assert report.ok, report.problems
        assert again.manifest["counts"]["messages"] == 30
    finally:
        await j.close()

"""The record is private to the relay's user: under umask 022 every directory the journal, its
blobs, keys, checkpoints and exports create is 0700 and every file 0600 (WAL and SHM too), and
a data directory left open by an earlier version is tightened on open, with a log line."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Iterator

import pytest

from relay.evidence import ExportFilter, write_export
from relay.evidence.keys import load_private_key
from relay.journal import Journal
from relay.journal.export import export as journal_export
from tests.compliance_support import sample_history

SECRET = "card 4111 1111 1111 1111 zebra"


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


def modes(root: Path) -> dict[str, int]:
    """Every entry under `root` (and root itself) → its permission bits."""
    out = {".": stat.S_IMODE(root.stat().st_mode)}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath, name)
            out[str(p.relative_to(root))] = stat.S_IMODE(p.lstat().st_mode)
    return out


def assert_private(root: Path) -> None:
    loose = {rel: oct(mode) for rel, mode in modes(root).items()
             if mode != (0o700 if (root / rel).is_dir() else 0o600)}
    assert not loose, loose


async def test_a_new_journal_and_its_files_are_private_under_umask_022(tmp_path: Path, umask_022: None) -> None:
    data = tmp_path / "srv" / "data"
    j = await Journal.open(data, checkpoint_every=2, checkpoint_dir=tmp_path / "cp")
    await j.put_blob(SECRET.encode() * 2000)
    for i in range(3):
        await j.append("message.received", {"id": f"m{i}", "text": SECRET})
    await j.checkpoint()
    assert (data / "journal.sqlite3-wal").exists() and (data / "journal.sqlite3-shm").exists()
    for name in ("journal.sqlite3", "journal.sqlite3-wal", "journal.sqlite3-shm"):
        assert stat.S_IMODE((data / name).stat().st_mode) == 0o600, name
    await j.close()
    assert {"keys", "blobs", "journal.sqlite3"} <= set(modes(data))
    assert_private(data)
    assert stat.S_IMODE((tmp_path / "srv").stat().st_mode) == 0o700  # a parent it had to create
    assert list((tmp_path / "cp").glob("checkpoint-*.json"))
    assert_private(tmp_path / "cp")


async def test_exports_are_private_under_umask_022(tmp_path: Path, umask_022: None) -> None:
    j = await Journal.open(tmp_path / "data")
    await sample_history(j)
    await j.checkpoint()
    await write_export(j, tmp_path / "evidence", ExportFilter(), load_private_key(tmp_path / "data" / "keys" / "journal_ed25519"))
    mine = tmp_path / "made-by-the-user"
    mine.mkdir()
    await journal_export(j, mine)
    await j.close()
    for root in (tmp_path / "evidence", mine):
        assert (root / "manifest.json").exists() and len(modes(root)) > 3
        assert_private(root)


async def test_an_open_data_directory_is_tightened_on_open_with_a_log_line(
        tmp_path: Path, umask_022: None, caplog: pytest.LogCaptureFixture) -> None:
    data = tmp_path / "data"
    j = await Journal.open(data)
    sha = await j.put_blob(SECRET.encode() * 2000)
    await j.append("message.received", {"id": "m1", "text": SECRET})
    await j.checkpoint()
    await j.close()
    for p in [data, *data.rglob("*")]:  # what an earlier version left under umask 022
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    caplog.set_level(logging.WARNING)
    j = await Journal.open(data)
    try:
        assert_private(data)
        assert (await j.get_blob(sha)) == SECRET.encode() * 2000
        lines = [r.getMessage() for r in caplog.records if "private" in r.getMessage()]
        assert len(lines) == 1 and str(data) in lines[0] and "readable by other local users" in lines[0]
        assert "4111" not in caplog.text and "zebra" not in caplog.text
    finally:
        await j.close()
    caplog.clear()
    j = await Journal.open(data)  # already private: nothing to say
    await j.close()
    assert not [r for r in caplog.records if "private" in r.getMessage()]

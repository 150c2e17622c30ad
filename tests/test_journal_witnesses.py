"""Witnesses outside the journal's reach (a directory, syslog, HTTP, an RFC 3161 TSA) catch a cut
tail with its checkpoint files deleted and a re-signed rewrite after the last local checkpoint."""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from relay.journal import Journal
from relay.journal.tsa import token_name
from relay.journal.witness import DirectoryWitness, HttpWitness, SyslogWitness, TsaWitness, Witness
from tests.journal_support import received, rows, tamper
from tests.witness_support import RecordStore, SyslogServer, TsaServer, make_tsa_keys, records_in

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tsa_keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tsa_keys(tmp_path_factory.mktemp("tsa"))


@dataclass
class Witnesses:
    directory: DirectoryWitness
    syslog: SyslogWitness
    http: HttpWitness
    tsa: TsaWitness
    store: RecordStore
    syslog_server: SyslogServer
    tsa_server: TsaServer

    @property
    def all(self) -> list[Witness]:
        return [self.directory, self.syslog, self.http, self.tsa]


@pytest.fixture
async def witnesses(tmp_path: Path, tsa_keys: Path) -> AsyncIterator[Witnesses]:
    store, tsa_server = RecordStore(), TsaServer(keys=tsa_keys)
    syslog_server = SyslogServer(tmp_path / "syslog" / "relay.log")
    (tmp_path / "syslog").mkdir()
    await store.start()
    await tsa_server.start()
    address = await syslog_server.start()
    try:
        yield Witnesses(
            DirectoryWitness("offsite", tmp_path / "witness-dir"),
            SyslogWitness("syslog", address, read_from=syslog_server.log),
            HttpWitness("http", store.url + "/checkpoints", token=store.token),
            TsaWitness("tsa", tsa_server.url + "/tsa", ca_file=tsa_keys / "ca.crt"),
            store, syslog_server, tsa_server)
    finally:
        await store.stop()
        await tsa_server.stop()
        await syslog_server.stop()


async def write(data: Path, texts: list[str], witnesses: list[Witness], *, tag: str = "m") -> None:
    """Append messages then sign the head (a checkpoint now), and close."""
    j = await Journal.open(data, checkpoint_every=1000, witnesses=witnesses)
    try:
        for i, text in enumerate(texts):
            await j.append("message.received", received(f"{tag}{i}-{text}", text), "c-1")
        await j.checkpoint()
    finally:
        await j.close()


async def verify(data: Path, witnesses: list[Witness] = (), full: bool = True) -> Any:  # type: ignore[assignment]
    j = await Journal.open(data, read_only=True)
    try:
        return await j.verify_recorded(full=full, witnesses=witnesses)
    finally:
        await j.close()


def checkpoint_seqs(data: Path) -> list[int]:
    return [r[0] for r in rows(data / "journal.sqlite3", "SELECT seq FROM events WHERE kind='checkpoint' ORDER BY seq")]


async def test_every_witness_gets_every_checkpoint_and_verify_agrees(tmp_path: Path, witnesses: Witnesses) -> None:
    data = tmp_path / "data"
    await write(data, ["one", "two", "three"], witnesses.all)
    await write(data, ["four", "five"], witnesses.all)
    seqs = checkpoint_seqs(data)
    assert len(seqs) == 2
    files = sorted(p.name for p in (tmp_path / "witness-dir").iterdir())
    assert files == [f"checkpoint-{s:012d}.json" for s in seqs]
    assert stat.S_IMODE(os.stat(tmp_path / "witness-dir" / files[0]).st_mode) == 0o600
    assert [r["seq"] for r in witnesses.store.records] == seqs
    assert [r["seq"] for r in records_in(witnesses.syslog_server.lines())] == seqs
    assert witnesses.syslog_server.lines()[0].startswith("<133>1 ")
    assert witnesses.tsa_server.replies == 2
    for s in seqs:
        assert (data / "checkpoints" / token_name(s)).stat().st_size > 0
    report = await verify(data, witnesses.all)
    assert report.ok, report.line()


async def test_a_cut_tail_with_its_checkpoints_deleted_is_caught_by_each_witness(
        tmp_path: Path, witnesses: Witnesses) -> None:
    data = tmp_path / "data"
    await write(data, ["one", "two", "three"], witnesses.all)
    await write(data, ["four", "five", "six"], witnesses.all)
    first, last = checkpoint_seqs(data)
    tamper(data / "journal.sqlite3", f"DELETE FROM events WHERE seq > {first}")
    for name in (f"checkpoint-{last:012d}.json", token_name(last)):
        (data / "checkpoints" / name).unlink()
    assert (await verify(data)).ok  # the journal alone cannot tell
    for w in (witnesses.directory, witnesses.syslog, witnesses.http):
        report = await verify(data, [w])
        assert (report.ok, report.first_bad_seq, report.problem) == (False, first + 1, "truncated"), w.name
        assert f"witness {w.name} records seq {last}" in report.detail


async def test_a_resigned_rewrite_after_the_last_local_checkpoint_is_caught(
        tmp_path: Path, witnesses: Witnesses) -> None:
    data = tmp_path / "data"
    await write(data, ["one", "two", "three"], witnesses.all)
    snapshot = tmp_path / "snapshot"
    shutil.copytree(data, snapshot, ignore=shutil.ignore_patterns("*.lock"))
    await write(data, ["buy 500 XYZ", "confirmed"], witnesses.all)
    first, last = checkpoint_seqs(data)
    token = (data / "checkpoints" / token_name(last)).read_bytes()
    # the rewrite: the journal as it was at the first checkpoint, then other messages, signed
    # with the journal's own key (on the host), and no witness told
    shutil.rmtree(data)
    shutil.copytree(snapshot, data)
    await write(data, ["buy 5 XYZ", "confirmed"], [])
    assert checkpoint_seqs(data) == [first, last]
    assert (await verify(data)).ok
    for w in (witnesses.directory, witnesses.syslog, witnesses.http):
        report = await verify(data, [w])
        assert (report.ok, report.problem) == (False, "witness mismatch"), w.name
        assert report.first_bad_seq == last - 1 and f"rewritten after seq {first}" in report.detail
        assert f"witness {w.name} records hash" in report.detail
    # the TSA's reply for the real checkpoint, left beside the rewritten one, does not cover it
    (data / "checkpoints" / token_name(last)).write_bytes(token)
    report = await verify(data, [witnesses.tsa])
    assert (report.ok, report.first_bad_seq, report.problem) == (False, last, "witness mismatch")
    assert "does not timestamp the journal's checkpoint" in report.detail


async def test_a_witness_that_is_down_gets_what_it_missed_with_the_next_checkpoint(
        tmp_path: Path, witnesses: Witnesses) -> None:
    data = tmp_path / "data"
    witnesses.store.down = True
    j = await Journal.open(data, checkpoint_every=1000, witnesses=[witnesses.http, witnesses.directory])
    try:
        await j.append("message.received", received("m1", "one"), "c-1")
        await j.checkpoint()
        for _ in range(200):
            if j.stats.witness_failures:
                break
            await asyncio.sleep(0.02)
        assert j.stats.witness_failures == 1 and witnesses.store.records == []
        witnesses.store.down = False
        await j.append("message.received", received("m2", "two"), "c-1")
        await j.checkpoint()
    finally:
        await j.close()
    seqs = checkpoint_seqs(data)
    assert [r["seq"] for r in witnesses.store.records] == seqs
    failed = rows(data / "journal.sqlite3", "SELECT body_json FROM events WHERE kind='witness.failed'")
    assert len(failed) == 1 and "HTTP 503" in failed[0][0]


async def test_cli_verify_with_a_witness_directory(tmp_path: Path, witnesses: Witnesses) -> None:
    data = tmp_path / "data"
    await write(data, ["one", "two"], [witnesses.directory])
    await write(data, ["three"], [witnesses.directory])
    first, last = checkpoint_seqs(data)
    tamper(data / "journal.sqlite3", f"DELETE FROM events WHERE seq > {first}")
    (data / "checkpoints" / f"checkpoint-{last:012d}.json").unlink()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "relay.cli", "journal", "verify", "--data-dir", str(data), "--full",
                         "--witness", str(tmp_path / "witness-dir")], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 1, out.stderr
    assert out.stdout.startswith(f"seq {first + 1}: truncated (witness {tmp_path / 'witness-dir'} records seq {last}")

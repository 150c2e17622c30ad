"""The WORM copy in S3 with Object Lock (COMPLIANCE mode, retain-until per record class), against
moto's S3 server on loopback: copied, checked against the journal, restored, and not deletable."""

from __future__ import annotations

import datetime
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError

from relay.journal import Journal, replica, signing
from relay.journal.replica import S3Target
from tests.journal_support import rows, tamper
from tests.test_journal_replica import grow, sync

KEYS = {"access_key_id": "testing", "secret_access_key": "testing", "region": "us-east-1"}


@pytest.fixture(scope="session")
def moto_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = Path(sys.executable).parent / "moto_server"
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")
    proc = subprocess.Popen([str(server), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise RuntimeError("moto_server did not start")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def bucket(url: str, name: str) -> None:
    s3 = boto3.client("s3", endpoint_url=url, aws_access_key_id="testing", aws_secret_access_key="testing",
                      region_name="us-east-1")
    s3.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)


async def test_s3_copy_is_locked_per_record_class_verifies_and_restores(tmp_path: Path, moto_url: str) -> None:
    bucket(moto_url, "relay-worm")
    day = 86400.0
    target = S3Target("relay-worm", "desk-a", endpoint_url=moto_url, **KEYS,
                      retain={"event": 7 * 365.25 * day, "blob": 3 * day, "checkpoint": 7 * 365.25 * day})
    data = tmp_path / "data"
    await grow(data, 0, 10)
    result = await sync(data, target, batch=8)
    head = rows(data / "journal.sqlite3", "SELECT MAX(seq) FROM events")[0][0]
    assert result.head == head and result.copied_blobs == 10
    seg = replica.segments(target)[0][2]
    blob = target.list("blobs")[0]
    now = datetime.datetime.now(datetime.timezone.utc)
    for key, days in ((seg, 7 * 365.25), (blob, 3)):
        obj = target.client.head_object(Bucket="relay-worm", Key="desk-a/" + key)
        assert obj["ObjectLockMode"] == "COMPLIANCE"
        assert abs((obj["ObjectLockRetainUntilDate"] - now).total_seconds() - days * day) < 600
    version = target.client.head_object(Bucket="relay-worm", Key="desk-a/" + seg)["VersionId"]
    with pytest.raises(ClientError):
        target.client.delete_object(Bucket="relay-worm", Key="desk-a/" + seg, VersionId=version)
    report = await replica.verify_copy(target, None, data / "journal.sqlite3", signing.load_public(data / "keys"))
    assert report.ok, report.line()
    tamper(data / "journal.sqlite3", f"UPDATE events SET hash='{'cd' * 32}' WHERE seq=3")
    report = await replica.verify_copy(target, None, data / "journal.sqlite3", signing.load_public(data / "keys"))
    assert (report.ok, report.first_bad_seq, report.problem) == (False, 3, "replica mismatch")
    restored = tmp_path / "restored"
    count = await replica.restore(target, restored)
    j = await Journal.open(restored, read_only=True)
    try:
        r = await j.verify_recorded(full=True)
        assert r.ok and r.count == count == head, r.line()
    finally:
        await j.close()


async def test_cli_restore_from_s3_url_with_configured_endpoint(tmp_path: Path, moto_url: str) -> None:
    bucket(moto_url, "relay-cli")
    data = tmp_path / "data"
    await grow(data, 0, 4)
    cfg = tmp_path / "relay.yaml"
    cfg.write_text(f"data_dir: {data}\njournal:\n  replica: {{type: s3, bucket: relay-cli, prefix: p,"
                   f" endpoint_url: '{moto_url}', access_key_id: testing, secret_access_key: testing}}\n")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "relay.cli", "journal", *args, "--config", str(cfg)],
                              capture_output=True, text=True, env=env, timeout=120)

    import asyncio
    out = await asyncio.to_thread(cli, "replicate")
    assert out.returncode == 0 and "s3://relay-cli/p/" in out.stdout, out.stderr
    out = await asyncio.to_thread(cli, "restore", "--from", "s3://relay-cli/p", "--data-dir", str(tmp_path / "new"))
    assert out.returncode == 0 and "verify: ok:" in out.stdout, out.stdout + out.stderr

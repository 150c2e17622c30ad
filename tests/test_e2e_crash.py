"""A relay process killed with SIGKILL mid-stream loses and duplicates nothing.

1,000 client messages are sent while the desk is offline; the process is killed after a few
hundred acks, restarted, the client resends what was not acknowledged (as the web chat page
does), then the employee logs in: every message arrives exactly once, in order.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
import yaml

from tests.e2e_support import ROOT, client_socket, desk_socket, web_config

TOTAL = 1000
KILL_AFTER = 400


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _start(cfg_path: Path, base: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "relay.cli", "run", "--config", str(cfg_path)],
                            cwd=ROOT, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)
    async with aiohttp.ClientSession() as s:
        for _ in range(300):
            if proc.poll() is not None:
                raise AssertionError(f"relay exited with {proc.returncode}: {log.read_text()[-2000:]}")
            try:
                async with s.get(f"{base}/healthz") as r:
                    if r.status == 200:
                        return proc
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    proc.kill()
    raise AssertionError("relay did not start: " + log.read_text()[-2000:])


async def test_kill_9_mid_stream_then_restart_delivers_every_message_once_in_order(tmp_path: Path) -> None:
    port = _free_port()
    cfg = web_config(tmp_path / "data", port=port)
    cfg_path = tmp_path / "relay.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "relay.log"

    proc = await _start(cfg_path, base, log)
    client = await client_socket(base, "crash-visitor", "Casey")
    for i in range(TOTAL):
        await client.send({"type": "message", "id": f"m{i}", "text": f"message {i:04d}"})
    await client.wait_for(lambda f: len(client.of_type("ack")) >= KILL_AFTER, timeout=60)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    acked = {f["id"] for f in client.of_type("ack")}
    await client.close()
    assert KILL_AFTER <= len(acked) < TOTAL, f"kill came too late to test anything: {len(acked)} acked"

    proc = await _start(cfg_path, base, log)
    try:
        client = await client_socket(base, "crash-visitor", "Casey")
        for i in range(TOTAL):
            if f"m{i}" not in acked:
                await client.send({"type": "message", "id": f"m{i}", "text": f"message {i:04d}"})
        await client.wait_for(lambda f: len({a["id"] for a in client.of_type("ack")} | acked) >= TOTAL, timeout=60)
        desk = await desk_socket(base, "alice")
        await desk.wait_for(lambda f: len(desk.of_type("message")) >= TOTAL, timeout=90)
        await asyncio.sleep(0.5)
        texts = [f["text"] for f in desk.of_type("message")]
        assert texts == [f"message {i:04d}" for i in range(TOTAL)]
        await desk.close()
        await client.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
    verify = subprocess.run([sys.executable, "-m", "relay.cli", "journal", "verify", "--config", str(cfg_path)],
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr

"""A relay process killed with SIGKILL mid-stream loses and duplicates nothing.

1,000 client messages are sent while the desk is offline; the process is killed after a few
hundred acks, restarted, the client resends what was not acknowledged (as the web chat page
does), then the employee logs in: every message arrives exactly once, in order.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import yaml

from tests.e2e_support import client_socket, desk_socket, free_port, start_relay, stop_relay, verify_journal, web_config

TOTAL = 1000
KILL_AFTER = 400


async def test_kill_9_mid_stream_then_restart_delivers_every_message_once_in_order(tmp_path: Path) -> None:
    port = free_port()
    cfg = web_config(tmp_path / "data", port=port)
    cfg_path = tmp_path / "relay.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "relay.log"

    proc = await start_relay(cfg_path, base, log)
    client = await client_socket(base, "crash-visitor", "Casey")
    for i in range(TOTAL):
        await client.send({"type": "message", "id": f"m{i}", "text": f"message {i:04d}"})
    await client.wait_for(lambda f: len(client.of_type("ack")) >= KILL_AFTER, timeout=60)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    acked = {f["id"] for f in client.of_type("ack")}
    await client.close()
    assert KILL_AFTER <= len(acked) < TOTAL, f"kill came too late to test anything: {len(acked)} acked"

    proc = await start_relay(cfg_path, base, log)
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
        stop_relay(proc)
    verify = verify_journal(cfg_path)
    assert verify.returncode == 0, verify.stdout + verify.stderr

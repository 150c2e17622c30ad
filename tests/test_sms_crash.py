"""A relay killed with SIGKILL while Twilio is posting SMS webhooks loses and duplicates nothing.

Twilio posts 200 messages one after another; the relay process is killed after 60 were
answered 200, restarted, and Twilio redelivers every message it got no 200 for (and, as it
may, a few it did). The employee then sees each message exactly once, in order, and the
journal verifies.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aiohttp
import yaml

from tests.e2e_support import desk_socket, free_port, start_relay, stop_relay, verify_journal
from tests.fake_twilio import FakeTwilio
from tests.test_sms_e2e import sms_config

TOTAL = 200
KILL_AFTER = 60
CLIENT = "+14155550199"


async def test_kill_9_mid_webhooks_then_redelivery_gives_every_sms_once_in_order(tmp_path: Path) -> None:
    twilio = FakeTwilio()
    await twilio.start()
    port = free_port()
    cfg = sms_config(tmp_path, twilio, port)
    cfg_path = tmp_path / "relay.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    base = f"http://127.0.0.1:{port}"
    url = f"{base}/webhooks/sms"
    log = tmp_path / "relay.log"
    forms = [twilio.inbound(CLIENT, f"sms {i:04d}", sid=f"SM{i:032x}") for i in range(TOTAL)]
    answered: set[int] = set()

    async def post_all(indexes: list[int]) -> None:
        for i in indexes:
            try:
                status, _ = await twilio.post(url, forms[i])
            except (aiohttp.ClientError, asyncio.TimeoutError):
                continue
            if status == 200:
                answered.add(i)

    proc = await start_relay(cfg_path, base, log)
    try:
        poster = asyncio.create_task(post_all(list(range(TOTAL))))
        while len(answered) < KILL_AFTER:
            await asyncio.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        await poster
        assert KILL_AFTER <= len(answered) < TOTAL, f"kill came too late: {len(answered)} answered"

        proc = await start_relay(cfg_path, base, log)
        redeliver = [i for i in range(TOTAL) if i not in answered]
        await post_all(sorted(set(redeliver) | {min(answered), max(answered)}))
        assert answered == set(range(TOTAL))
        desk = await desk_socket(base, "alice")
        await desk.wait_for(lambda f: len(desk.of_type("message")) >= TOTAL, timeout=90)
        await asyncio.sleep(0.5)
        assert [f["text"] for f in desk.of_type("message")] == [f"sms {i:04d}" for i in range(TOTAL)]
        await desk.close()
    finally:
        stop_relay(proc)
        await twilio.stop()
    verify = verify_journal(cfg_path)
    assert verify.returncode == 0, verify.stdout + verify.stderr

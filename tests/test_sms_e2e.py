"""End to end: a client texting over SMS (fake Twilio on loopback) ↔ an employee on the web
desk, through a running relay with the real journal and the shipped policies."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, TypeVar

import pytest

from relay.app import RelayApp
from tests.e2e_support import desk_socket, free_port, running, web_config
from tests.fake_twilio import FakeTwilio

T = TypeVar("T")
RECORDING = "This conversation is recorded for regulatory purposes."
CLIENT = "+14155550123"


async def until(probe: Callable[[], Awaitable[T | None]], what: str, timeout: float = 10.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.fixture
async def twilio() -> AsyncIterator[FakeTwilio]:
    fake = FakeTwilio()
    await fake.start()
    yield fake
    await fake.stop()


def sms_config(tmp_path: Path, twilio: FakeTwilio, port: int) -> dict[str, Any]:
    cfg = web_config(tmp_path / "data", port=port, public_url=f"http://127.0.0.1:{port}")
    cfg["channels"]["sms"] = {"network": "sms", "side": "client", "account_sid": twilio.account_sid,
                              "auth_token": twilio.auth_token, "from_number": twilio.number,
                              "api_url": twilio.url, "timeout": 5}
    cfg["desks"]["advisors"]["clients"] += ["sms"]
    return cfg


async def rows(relay: RelayApp, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
    return list(await relay.journal.fetchall(sql, params))


async def test_sms_client_to_desk_and_back_with_redaction_receipts_and_stop(tmp_path: Path, twilio: FakeTwilio) -> None:
    port = free_port()
    async with running(sms_config(tmp_path, twilio, port)) as relay:
        url = f"http://127.0.0.1:{port}/webhooks/sms"
        desk = await desk_socket(relay.base_url, "alice")
        form = twilio.inbound(CLIENT, "my card is 4111 1111 1111 1111, please pay", sid="SM" + "c" * 32)

        before = (await rows(relay, "SELECT COUNT(*) AS n FROM events"))[0]["n"]
        assert (await twilio.post(url, form, sign="bm9wZQ=="))[0] == 403
        assert (await rows(relay, "SELECT COUNT(*) AS n FROM events"))[0]["n"] == before

        for _ in range(2):
            assert (await twilio.post(url, form))[0] == 200
        got = await desk.wait_for(lambda f: f.get("type") == "message" and "please pay" in f.get("text", ""))
        assert "4111" not in got["text"] and "[REDACTED]" in got["text"] and got["verdict"]["action"] == "redact"
        kept = await rows(relay, "SELECT text FROM messages WHERE channel = 'sms' AND platform_id = ?", ("SM" + "c" * 32,))
        assert [r["text"] for r in kept] == ["my card is 4111 1111 1111 1111, please pay"]

        assert (await desk.reply(got["conversation"], "r1", "Thank you, payment is on its way."))["type"] == "ack"

        async def sent() -> list[dict[str, str]]:
            return twilio.sent

        (out,) = await until(sent, "the reply over SMS")
        assert out["To"] == CLIENT and out["From"] == twilio.number
        assert out["Body"].startswith(RECORDING) and out["Body"].endswith("Thank you, payment is on its way.")
        assert out["StatusCallback"] == url + "/status"

        async def delivered() -> list[Any]:
            return await rows(relay, "SELECT platform_id FROM deliveries WHERE channel = 'sms' AND state = 'delivered'")

        assert [r["platform_id"] for r in await until(delivered, "the delivery")] == [out["_sid"]]
        assert await twilio.deliver_statuses(out["_sid"], "sent", "delivered") == [200, 200]

        async def receipts() -> list[Any]:
            return await rows(relay, "SELECT json_extract(body_json, '$.status') AS s FROM events "
                                     "WHERE kind = 'delivery.receipt'")

        assert [r["s"] for r in await until(receipts, "two receipts")] == ["status:sent", "status:delivered"]

        assert (await desk.reply(got["conversation"], "r1b", "Your card is blocked now."))["type"] == "ack"
        async def two() -> list[dict[str, str]]:
            return twilio.sent[:2] if len(twilio.sent) >= 2 else []

        (_, second) = await until(two, "the second reply")

        async def second_delivered() -> list[Any]:
            return await rows(relay, "SELECT 1 FROM deliveries WHERE channel = 'sms' AND platform_id = ?", (second["_sid"],))

        await until(second_delivered, "the second delivery journaled")
        assert await twilio.deliver_statuses(second["_sid"], "sent", "undelivered", error_code="30003") == [200, 200]

        async def failures() -> list[Any]:
            return await rows(relay, "SELECT json_extract(body_json, '$.reason') AS r FROM events "
                                     "WHERE kind = 'delivery.failed' AND json_extract(body_json, '$.permanent') = 1")

        (undelivered,) = await until(failures, "the undelivered status as a failure")
        assert "undelivered" in undelivered["r"] and "30003" in undelivered["r"]

        assert (await twilio.post(url, twilio.inbound(CLIENT, "STOP")))[0] == 200
        await desk.wait_for(lambda f: f.get("type") == "message" and f.get("text") == "STOP")
        assert (await desk.reply(got["conversation"], "r2", "Are you still there?"))["type"] == "ack"

        async def failed() -> list[Any]:
            return await rows(relay, "SELECT body_json FROM events WHERE kind = 'delivery.failed' "
                                     "AND json_extract(body_json, '$.reason') LIKE '%opted out%'")

        (failure,) = await until(failed, "the opted-out delivery to fail")
        assert "opted out" in json.loads(failure["body_json"])["reason"]
        notice = await desk.wait_for(lambda f: f.get("type") == "notice" and "opted out" in f.get("text", ""))
        assert notice["conversation"] == got["conversation"]
        assert len(twilio.sent) == 2
        await desk.close()

"""End to end: a client on SMS (fake Twilio) ↔ employees in a Slack channel (fake Slack), through
a running relay with the real journal and the shipped policies: one thread per conversation,
replies with no command, an edit forwarded, files, and a reply from the wrong employee refused."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, TypeVar

import pytest

from relay.app import RelayApp
from tests.e2e_support import free_port, running, web_config
from tests.fake_slack import FakeSlack
from tests.fake_twilio import FakeTwilio

T = TypeVar("T")
RECORDING = "This conversation is recorded for regulatory purposes."
CLIENT = "+14155550111"
ALICE, BOB = "U0ALICE", "U0BOB"


async def until(probe: Callable[[], T | None] | Callable[[], Awaitable[T | None]], what: str, timeout: float = 10.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeTwilio, FakeSlack]]:
    twilio, slack = FakeTwilio(), FakeSlack()
    await twilio.start()
    await slack.start()
    yield twilio, slack
    await slack.stop()
    await twilio.stop()


def config(tmp_path: Path, twilio: FakeTwilio, slack: FakeSlack, port: int) -> dict[str, Any]:
    cfg = web_config(tmp_path / "data", port=port, public_url=f"http://127.0.0.1:{port}")
    cfg["channels"]["sms"] = {"network": "sms", "side": "client", "account_sid": twilio.account_sid,
                              "auth_token": twilio.auth_token, "from_number": twilio.number,
                              "api_url": twilio.url, "timeout": 5}
    cfg["channels"]["slack"] = {"network": "slack", "side": "staff", "bot_token": slack.token,
                                "signing_secret": slack.signing_secret, "channel": slack.channel,
                                "api_url": slack.url + "/api/", "timeout": 5}
    for emp, user in (("alice", ALICE), ("bob", BOB)):
        cfg["employees"][emp]["staff"] = {"channel": "slack", "address": user}
    cfg["desks"] = {"advisors": {"clients": ["sms"], "members": ["alice"]},
                    "backoffice": {"clients": ["webchat"], "members": ["bob"]}}
    return cfg


async def rows(relay: RelayApp, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
    return list(await relay.journal.fetchall(sql, params))


async def test_sms_client_and_slack_employee_threads_replies_edits_files_and_refusal(
        tmp_path: Path, fakes: tuple[FakeTwilio, FakeSlack]) -> None:
    twilio, slack = fakes
    port = free_port()
    async with running(config(tmp_path, twilio, slack, port)) as relay:
        sms_url = f"http://127.0.0.1:{port}/webhooks/sms"
        events = f"http://127.0.0.1:{port}/slack/slack/events"
        challenge = {"type": "url_verification", "challenge": "abc123", "token": "t"}
        assert (await slack.post_event(events, challenge)) == (200, '{"challenge": "abc123"}')

        form = twilio.inbound(CLIENT, "my card is 4111 1111 1111 1111, please pay", sid="SM" + "e" * 32)
        assert (await twilio.post(sms_url, form))[0] == 200
        root, first = await until(lambda: slack.posts[:2] if len(slack.posts) >= 2 else None, "the thread on Slack")
        assert root["text"] == f"New conversation: {CLIENT} (sms)" and first["thread_ts"] == root["ts"]
        assert "please pay" in first["text"] and "4111" not in first["text"] and "[REDACTED]" in first["text"]
        assert first["text"].startswith("[redact")
        thread = root["ts"]

        reply = slack.message(ALICE, "Thank you, payment is on its way.", thread)
        assert (await slack.post_event(events, slack.envelope(reply)))[0] == 200
        (out,) = await until(lambda: twilio.sent or None, "the reply over SMS")
        assert out["To"] == CLIENT and out["Body"].startswith(RECORDING)
        assert out["Body"].endswith("Thank you, payment is on its way.")

        assert (await slack.post_event(events, slack.envelope(slack.edited(reply, "Payment sent today."))))[0] == 200
        edit = (await until(lambda: twilio.sent[1:] or None, "the edit over SMS"))[0]
        assert edit["Body"].startswith("(edited) ") and edit["Body"].endswith("Payment sent today.")

        wrong = slack.message(BOB, "I can take this one", thread)
        assert (await slack.post_event(events, slack.envelope(wrong)))[0] == 200
        notice = await until(lambda: [p for p in slack.posts if p["text"].startswith(f"<@{BOB}>")] or None,
                             "the refusal notice")
        assert notice[0]["thread_ts"] == thread and "assigned to alice" in notice[0]["text"]
        refused = await rows(relay, "SELECT json_extract(body_json, '$.refused') AS r FROM events WHERE kind = "
                                    "'message.received' AND json_extract(body_json, '$.text') = 'I can take this one'")
        assert len(refused) == 1 and "assigned to alice" in refused[0]["r"]

        photo = twilio.add_media("SMp1", "MEp1", b"\x89PNG" + b"q" * 300, "image/png")
        mms = twilio.inbound(CLIENT, "my id card", sid="SMp1", media=[(photo, "image/png")])
        assert (await twilio.post(sms_url, mms))[0] == 200
        (shared,) = await until(lambda: slack.shared or None, "the photo on Slack")
        assert shared["data"] == b"\x89PNG" + b"q" * 300 and shared["thread_ts"] == thread

        await asyncio.sleep(0.3)
        assert len(twilio.sent) == 2
        delivered = await rows(relay, "SELECT COUNT(*) AS n FROM deliveries WHERE channel = 'slack' AND state = 'delivered'")
        assert delivered[0]["n"] >= 3
        ev = await rows(relay, "SELECT body_json FROM events WHERE kind = 'message.received' "
                               "AND json_extract(body_json, '$.channel') = 'slack'")
        assert len(ev) == 3 and json.loads(ev[0]["body_json"])["sender"]["user"] == ALICE

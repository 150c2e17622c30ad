"""A Signal delivery receipt that arrives before signal-cli has answered the `send` is linked
to its delivery once `message.delivered` is journaled (real relay, fake signal-cli and Slack)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from tests.fake_signal import FakeSignalCli
from tests.fake_slack import FakeSlack
from tests.e2e_support import running
from tests.test_signal_e2e import ALICE, CLIENT, config, fakes, rows, until  # noqa: F401 (the fixture)


async def test_a_receipt_before_the_send_answers_is_linked(tmp_path: Path, fakes: tuple[FakeSignalCli, FakeSlack]) -> None:
    cli, slack = fakes
    async with running(config(tmp_path, cli, slack)) as relay:
        events = f"{relay.base_url}/slack/slack/events"
        await until(lambda: cli.subscriptions >= 1, "the relay subscribing to signal-cli")
        await cli.push(cli.text(CLIENT, "Hello, is my transfer done?"))
        root, _ = await until(lambda: slack.posts[:2] if len(slack.posts) >= 2 else None, "the thread")
        cli.answer_delay = 1.5
        reply = slack.message(ALICE, "Yes, this morning.", root["ts"])
        assert (await slack.post_event(events, slack.envelope(reply)))[0] == 200
        (sent,) = await until(lambda: cli.sent or None, "the reply on Signal")
        await cli.push(cli.receipt(CLIENT, [sent["_timestamp"]]))

        async def parked() -> list[object]:
            return await rows(relay, "SELECT seq FROM messages WHERE channel = 'signal' AND kind = 'event'")

        journaled: list[object] = []
        for _ in range(100):  # within 1 s, while the send's answer is held for 1.5 s
            journaled = await parked()
            if journaled:
                break
            await asyncio.sleep(0.01)
        assert journaled, "the receipt was not journaled while the send waited"
        assert not await rows(relay, "SELECT 1 FROM events WHERE kind = 'message.delivered' "
                                     "AND json_extract(body_json, '$.channel') = 'signal'")

        linked: list[object] = []
        for _ in range(500):
            linked = await rows(relay, "SELECT body_json FROM events WHERE kind = 'delivery.receipt'")
            if linked:
                break
            await asyncio.sleep(0.02)
        (receipt,) = [json.loads(r["body_json"]) for r in linked]  # type: ignore[index]
        (delivered,) = await rows(relay, "SELECT body_json FROM events WHERE kind = 'message.delivered' "
                                         "AND json_extract(body_json, '$.channel') = 'signal'")
        body = json.loads(delivered["body_json"])
        assert receipt["delivery_id"] == body["delivery_id"] and receipt["platform_id"] == body["platform_id"]
        assert body["platform_id"].endswith(f":{sent['_timestamp']}")
        assert receipt["status"] == "receipt"

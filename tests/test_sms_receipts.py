"""Twilio status callbacks linked to their delivery even when they beat the send's own answer,
and for every part of a split text, through a running relay with the real journal."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.e2e_support import desk_socket, free_port, running
from tests.fake_twilio import FakeTwilio
from tests.test_sms_e2e import CLIENT, rows, sms_config, until, twilio  # noqa: F401 (the fixture)


async def test_status_callbacks_before_the_send_answers_are_linked_and_a_failure_fails_it(
        tmp_path: Path, twilio: FakeTwilio) -> None:
    port = free_port()
    async with running(sms_config(tmp_path, twilio, port)) as relay:
        url = f"http://127.0.0.1:{port}/webhooks/sms"
        desk = await desk_socket(relay.base_url, "alice")
        assert (await twilio.post(url, twilio.inbound(CLIENT, "hello, any news?")))[0] == 200
        got = await desk.wait_for(lambda f: f.get("type") == "message" and "any news" in f.get("text", ""))
        twilio.answer_delay = 1.5
        assert (await desk.reply(got["conversation"], "r1", "Not yet, sorry."))["type"] == "ack"

        async def accepted() -> list[dict[str, Any]]:
            return twilio.sent

        (sent,) = await until(accepted, "Twilio to accept the reply")
        sid = sent["_sid"]
        assert await twilio.deliver_statuses(sid, "sent", "failed", error_code="30008") == [200, 200]
        early = await rows(relay, "SELECT COUNT(*) AS n FROM events WHERE kind IN ('message.delivered', 'delivery.receipt') "
                                  "AND json_extract(body_json, '$.channel') = 'sms'")
        assert early[0]["n"] == 0  # both callbacks journaled while the send still waits for its answer

        async def linked() -> list[Any]:
            got = await rows(relay, "SELECT body_json FROM events WHERE kind = 'delivery.receipt'")
            return got if len(got) == 2 else []

        receipts = [json.loads(r["body_json"]) for r in await until(linked, "the early receipts linked")]
        (delivered,) = await rows(relay, "SELECT seq, body_json FROM events WHERE kind = 'message.delivered' "
                                         "AND json_extract(body_json, '$.channel') = 'sms'")
        delivery_id = json.loads(delivered["body_json"])["delivery_id"]
        assert [(r["status"], r["delivery_id"], r["platform_id"]) for r in receipts] == [
            ("status:sent", delivery_id, sid), ("status:failed: Twilio error 30008", delivery_id, sid)]
        statuses = await rows(relay, "SELECT id, seq FROM messages WHERE kind = 'event' AND channel = 'sms' ORDER BY seq")
        assert [r["id"] for r in statuses] == [r["event_id"] for r in receipts]
        assert all(r["seq"] < delivered["seq"] for r in statuses)

        async def failed() -> list[Any]:
            return await rows(relay, "SELECT state, reason FROM deliveries WHERE delivery_id = ? AND state = 'failed'",
                              (delivery_id,))

        (row,) = await until(failed, "the failed status to fail the delivery")
        assert "30008" in row["reason"]
        twilio.answer_delay = 0.0
        assert await twilio.deliver_statuses(sid, "failed", error_code="30008") == [200]  # a redelivery: no new link
        assert len(await rows(relay, "SELECT 1 FROM events WHERE kind = 'delivery.receipt'")) == 2
        await desk.close()


async def test_status_callbacks_of_every_part_of_a_split_text_are_linked(tmp_path: Path, twilio: FakeTwilio) -> None:
    port = free_port()
    async with running(sms_config(tmp_path, twilio, port)) as relay:
        url = f"http://127.0.0.1:{port}/webhooks/sms"
        desk = await desk_socket(relay.base_url, "alice")
        assert (await twilio.post(url, twilio.inbound(CLIENT, "send me the full terms")))[0] == 200
        got = await desk.wait_for(lambda f: f.get("type") == "message" and "full terms" in f.get("text", ""))
        assert (await desk.reply(got["conversation"], "r1", "term " * 700))["type"] == "ack"

        async def delivered() -> list[Any]:
            return await rows(relay, "SELECT delivery_id, platform_id FROM deliveries WHERE channel = 'sms' "
                                     "AND state = 'delivered'")

        (delivery,) = await until(delivered, "the long reply delivered")
        sids = [s["_sid"] for s in twilio.sent]
        assert len(sids) >= 3 and delivery["platform_id"] == sids[0]
        for part in sids:
            assert await twilio.deliver_statuses(part, "delivered") == [200]

        async def linked() -> list[Any]:
            got = await rows(relay, "SELECT body_json FROM events WHERE kind = 'delivery.receipt'")
            return got if len(got) == len(sids) else []

        receipts = [json.loads(r["body_json"]) for r in await until(linked, "a receipt for every part")]
        assert {r["delivery_id"] for r in receipts} == {delivery["delivery_id"]}
        kept = await rows(relay, "SELECT text FROM messages WHERE kind = 'event' AND channel = 'sms' ORDER BY seq")
        assert [r["text"] for r in kept] == ["status:delivered"] * len(sids)
        raws = await rows(relay, "SELECT json_extract(body_json, '$.platform_id') AS p FROM events "
                                 "WHERE kind = 'message.received' AND json_extract(body_json, '$.kind') = 'event'")
        assert [r["p"].split(":")[1] for r in raws] == sids  # each part's own sid is what was journaled
        await desk.close()

"""End to end: a client on WhatsApp or WeChat (fake network on loopback) ↔ an employee on the
web desk, through a running relay with the real journal and the shipped policies."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, TypeVar

import aiohttp
import pytest

from relay.app import RelayApp
from relay.config import DEFAULT_NOTICES
from tests.e2e_support import desk_socket, running, web_config
from tests.fake_graph import FakeGraph
from tests.fake_wechat import FakeWeChat

T = TypeVar("T")
RECORDING = "This conversation is recorded for regulatory purposes."
AES_KEY = "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR"
WA_ID = "8613800138000"
OPENID = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"


def config(tmp_path: Path, graph: FakeGraph, wechat: FakeWeChat) -> dict[str, Any]:
    cfg = web_config(tmp_path / "data")
    cfg["channels"]["whatsapp"] = {
        "network": "whatsapp", "side": "client", "phone_number_id": graph.phone_number_id,
        "access_token": graph.access_token, "app_secret": graph.app_secret, "verify_token": "verify-me",
        "graph_url": graph.url, "api_version": "v21.0", "timeout": 5,
        "template": {"name": "reengage", "language": "en_US"},
    }
    cfg["channels"]["wechat"] = {
        "network": "wechat", "side": "client", "app_id": wechat.app_id, "app_secret": wechat.app_secret,
        "token": wechat.token, "encoding_aes_key": AES_KEY, "api_url": wechat.url, "timeout": 5,
    }
    cfg["desks"]["advisors"]["clients"] += ["whatsapp", "wechat"]
    return cfg


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeGraph, FakeWeChat]]:
    graph, wechat = FakeGraph(), FakeWeChat(encoding_aes_key=AES_KEY)
    await graph.start()
    await wechat.start()
    yield graph, wechat
    await wechat.stop()
    await graph.stop()


async def until(probe: Callable[[], Awaitable[T | None]], what: str, timeout: float = 10.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def rows(relay: RelayApp, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
    return list(await relay.journal.fetchall(sql, params))


async def raw_of(relay: RelayApp, body: dict[str, Any]) -> bytes | None:
    """The raw payload of a message.received body: inline (small) or a blob (large)."""
    if body.get("raw_inline") is not None:
        return base64.b64decode(body["raw_inline"])
    return await relay.journal.get_blob(body["raw_sha256"]) if body.get("raw_sha256") else None


async def event_count(relay: RelayApp) -> int:
    return (await rows(relay, "SELECT COUNT(*) AS n FROM events"))[0]["n"]


async def test_whatsapp_client_and_desk_with_redaction_recording_notice_and_statuses(
        tmp_path: Path, fakes: tuple[FakeGraph, FakeWeChat]) -> None:
    graph, wechat = fakes
    async with running(config(tmp_path, graph, wechat)) as relay:
        url = f"{relay.base_url}/webhooks/whatsapp"
        desk = await desk_socket(relay.base_url, "alice")
        body = graph.text_message(WA_ID, "my card is 4111 1111 1111 1111, please pay", wamid="wamid.C1", name="Wang Fang")

        before = await event_count(relay)
        assert (await graph.post_webhook(url, body, signature="sha256=" + "0" * 64))[0] == 401
        assert (await graph.post_webhook(url, body, signature=None))[0] == 401
        assert await event_count(relay) == before

        for _ in range(3):
            assert (await graph.post_webhook(url, body))[0] == 200
        got = await desk.wait_for(lambda f: f.get("type") == "message" and "please pay" in f.get("text", ""))
        assert "4111" not in got["text"] and "[REDACTED]" in got["text"]
        assert got["from"]["name"] == "Wang Fang" and got["verdict"]["action"] == "redact"
        kept = await rows(relay, "SELECT text FROM messages WHERE channel = 'whatsapp' AND platform_id = 'wamid.C1'")
        assert [r["text"] for r in kept] == ["my card is 4111 1111 1111 1111, please pay"]
        received = await rows(relay, "SELECT body_json FROM events WHERE kind = 'message.received' "
                                     "AND json_extract(body_json, '$.platform_id') = 'wamid.C1'")
        assert len(received) == 1
        assert await raw_of(relay, json.loads(received[0]["body_json"])) == json.dumps(body).encode()

        assert (await desk.reply(got["conversation"], "r1", "Thank you, payment is on its way."))["type"] == "ack"

        async def sent() -> list[dict[str, Any]]:
            return graph.sent

        (out,) = await until(sent, "the reply on WhatsApp")
        assert out["type"] == "text" and out["to"] == WA_ID
        assert out["text"]["body"].startswith(RECORDING) and out["text"]["body"].endswith("Thank you, payment is on its way.")

        async def delivered() -> list[Any]:
            return await rows(relay, "SELECT platform_id FROM deliveries WHERE channel = 'whatsapp' AND state = 'delivered'")

        assert [r["platform_id"] for r in await until(delivered, "the delivery")] == [out["_wamid"]]

        for status in ("sent", "delivered", "read"):
            assert (await graph.post_webhook(url, graph.status(out["_wamid"], status, WA_ID)))[0] == 200
        statuses = await rows(relay, "SELECT text, kind, reply_to_platform FROM ("
                                     "SELECT json_extract(body_json, '$.text') AS text, json_extract(body_json, '$.kind') AS kind, "
                                     "json_extract(body_json, '$.reply_to_platform') AS reply_to_platform "
                                     "FROM events WHERE kind = 'message.received') WHERE text LIKE 'status:%'")
        assert [(r["text"], r["kind"], r["reply_to_platform"]) for r in statuses] == [
            (f"status:{s}", "event", out["_wamid"]) for s in ("sent", "delivered", "read")]
        assert len(graph.sent) == 1

        garbage = b'{"object": "whatsapp_business_account", "entry": [{"changes": "nope"}]}'
        assert (await graph.post_webhook(url, garbage))[0] == 200
        ev = await rows(relay, "SELECT body_json FROM events "
                               "WHERE kind = 'message.received' AND json_extract(body_json, '$.kind') = 'event' "
                               "AND json_extract(body_json, '$.platform_id') LIKE 'raw:%'")
        assert len(ev) == 1 and await raw_of(relay, json.loads(ev[0]["body_json"])) == garbage
        await desk.close()


async def test_whatsapp_reply_outside_24_hours_goes_out_as_the_template(
        tmp_path: Path, fakes: tuple[FakeGraph, FakeWeChat]) -> None:
    graph, wechat = fakes
    async with running(config(tmp_path, graph, wechat)) as relay:
        url = f"{relay.base_url}/webhooks/whatsapp"
        desk = await desk_socket(relay.base_url, "alice")
        old = graph.text_message(WA_ID, "question from yesterday", timestamp=time.time() - 25 * 3600)
        assert (await graph.post_webhook(url, old))[0] == 200
        got = await desk.wait_for(lambda f: f.get("type") == "message" and "yesterday" in f.get("text", ""))
        assert (await desk.reply(got["conversation"], "r1", "Sorry for the delay"))["type"] == "ack"

        async def delivered() -> list[Any]:
            return await rows(relay, "SELECT platform_id FROM deliveries WHERE channel = 'whatsapp' AND state = 'delivered'")

        (row,) = await until(delivered, "the template delivery")
        assert [s["type"] for s in graph.sent] == ["template"]
        assert row["platform_id"] == f"template:{graph.sent[0]['_wamid']}"
        await desk.close()


async def test_wechat_client_in_chinese_through_policies_and_back(
        tmp_path: Path, fakes: tuple[FakeGraph, FakeWeChat]) -> None:
    graph, wechat = fakes
    async with running(config(tmp_path, graph, wechat)) as relay:
        url = f"{relay.base_url}/webhooks/wechat"
        assert await wechat.verify(url, "echo-123") == (200, "echo-123")
        desk = await desk_socket(relay.base_url, "alice")

        before = await event_count(relay)
        xml = wechat.text(OPENID, "你好，我想了解一下基金", msg_id=6054768590064713728)
        body, query = wechat.envelope(xml)
        assert (await wechat.push(url, xml, query={**query, "msg_signature": "0" * 40}, body=body))[0] == 401
        assert (await wechat.push(url, xml, safe=False))[0] == 401
        assert await event_count(relay) == before

        results = await asyncio.gather(*(wechat.push(url, xml) for _ in range(3)))
        assert results == [(200, "success")] * 3
        hello = await desk.wait_for(lambda f: f.get("type") == "message" and "基金" in f.get("text", ""))
        count = await rows(relay, "SELECT COUNT(*) AS n FROM messages WHERE channel = 'wechat' AND platform_id = '6054768590064713728'")
        assert count[0]["n"] == 1

        card = wechat.text(OPENID, "我的卡号是 4111 1111 1111 1111 请帮我付款", msg_id=6054768590064713731)
        assert await wechat.push(url, card) == (200, "success")
        redacted = await desk.wait_for(lambda f: f.get("type") == "message" and "付款" in f.get("text", ""))
        assert "4111" not in redacted["text"] and "[REDACTED]" in redacted["text"]
        original = await rows(relay, "SELECT text FROM messages WHERE platform_id = '6054768590064713731'")
        assert original[0]["text"] == "我的卡号是 4111 1111 1111 1111 请帮我付款"

        inside = wechat.text(OPENID, "我有内幕消息，这个产品保本保息", msg_id=6054768590064713729)
        assert await wechat.push(url, inside) == (200, "success")
        marker = wechat.text(OPENID, "谢谢", msg_id=6054768590064713730)
        assert await wechat.push(url, marker) == (200, "success")
        await desk.wait_for(lambda f: f.get("type") == "message" and f.get("text") == "谢谢")
        assert not [f for f in desk.of_type("message") if "内幕" in f.get("text", "")]
        held = await rows(relay, "SELECT q.state, q.action, q.rules_json FROM review_queue q JOIN messages m "
                                 "ON m.id = q.message_id WHERE m.platform_id = '6054768590064713729'")
        assert len(held) == 1 and held[0]["state"] == "open" and held[0]["action"] == "quarantine"
        assert {"MC-004", "CN-002"} <= {hit["rule"] for hit in json.loads(held[0]["rules_json"])}

        assert (await desk.reply(hello["conversation"], "r1", "您好，很高兴为您服务"))["type"] == "ack"

        async def sent() -> list[dict[str, Any]] | None:
            return wechat.sent if len(wechat.sent) >= 2 else None

        held_notice, out = await until(sent, "the held notice and the reply on WeChat")
        assert held_notice["touser"] == OPENID and held_notice["text"]["content"] == DEFAULT_NOTICES["held"]
        assert out["touser"] == OPENID and out["msgtype"] == "text"
        assert out["text"]["content"].startswith(RECORDING) and out["text"]["content"].endswith("您好，很高兴为您服务")
        assert wechat.token_fetches == 1

        async def delivered() -> list[Any]:
            return await rows(relay, "SELECT platform_id, message_id FROM deliveries WHERE channel = 'wechat' AND state = 'delivered'"
                                     " AND json_extract(out_json, '$.kind') != 'notice'")

        (row,) = await until(delivered, "the delivery")
        assert row["platform_id"] == f"custom:{row['message_id']}"
        await desk.close()


async def test_wechat_reply_past_48_hours_is_a_journaled_failure_the_employee_sees(
        tmp_path: Path, fakes: tuple[FakeGraph, FakeWeChat]) -> None:
    graph, wechat = fakes
    async with running(config(tmp_path, graph, wechat)) as relay:
        url = f"{relay.base_url}/webhooks/wechat"
        desk = await desk_socket(relay.base_url, "alice")
        old = wechat.text(OPENID, "三天前的问题", created=int(time.time() - 49 * 3600))
        assert await wechat.push(url, old) == (200, "success")
        got = await desk.wait_for(lambda f: f.get("type") == "message" and "三天前" in f.get("text", ""))
        assert (await desk.reply(got["conversation"], "r1", "抱歉回复晚了"))["type"] == "ack"

        async def failed() -> list[Any]:
            return await rows(relay, "SELECT json_extract(body_json, '$.reason') AS reason FROM events "
                                     "WHERE kind = 'delivery.failed' AND json_extract(body_json, '$.permanent') = 1")

        (row,) = await until(failed, "the permanent failure")
        assert "48-hour" in row["reason"]
        notice = await desk.wait_for(lambda f: f.get("type") == "notice" and "48-hour" in f.get("text", ""))
        assert notice["conversation"] == got["conversation"]
        assert wechat.sent == []
        await desk.close()


async def test_whatsapp_files_both_ways_and_the_oversize_notice(
        tmp_path: Path, fakes: tuple[FakeGraph, FakeWeChat]) -> None:
    graph, wechat = fakes
    cfg = config(tmp_path, graph, wechat)
    cfg["limits"] = {"max_attachment_bytes": 4096}
    async with running(cfg) as relay:
        url = f"{relay.base_url}/webhooks/whatsapp"
        desk = await desk_socket(relay.base_url, "alice")
        graph.add_media("img-1", b"\x89PNG small chart", "image/png")
        graph.add_media("vid-big", b"v" * 10_000, "video/mp4", declared_size=10_000)
        assert (await graph.post_webhook(url, graph.media_message(WA_ID, "image", "img-1", "image/png", caption="my chart")))[0] == 200
        got = await desk.wait_for(lambda f: f.get("type") == "message" and f.get("text") == "my chart")
        (att,) = got["attachments"]
        async with desk.session.get(relay.base_url + att["url"]) as resp:
            assert resp.status == 200 and await resp.read() == b"\x89PNG small chart"

        assert (await graph.post_webhook(url, graph.media_message(WA_ID, "video", "vid-big", "video/mp4", caption="big one")))[0] == 200
        assert "vid-big" not in graph.downloads

        async def notice() -> list[dict[str, Any]]:
            return [s for s in graph.sent if s["type"] == "text" and "larger than we can accept" in s["text"]["body"]]

        await until(notice, "the oversize notice on WhatsApp")
        refused = await rows(relay, "SELECT attachments_json FROM messages WHERE text = 'big one'")
        assert json.loads(refused[0]["attachments_json"])[0]["refused"].startswith("too large")

        form = aiohttp.FormData()
        form.add_field("file", b"%PDF-1.7 terms", filename="terms.pdf", content_type="application/pdf")
        async with desk.session.post(f"{relay.base_url}/desk/upload", data=form) as resp:
            assert resp.status == 200
            upload = (await resp.json())["upload"]
        await desk.send({"type": "reply", "conversation": got["conversation"], "id": "r-file", "text": "the terms",
                         "attachments": [upload]})

        async def document() -> list[dict[str, Any]]:
            return [s for s in graph.sent if s["type"] == "document"]

        (doc,) = await until(document, "the document on WhatsApp")
        assert doc["document"]["filename"] == "terms.pdf" and doc["document"]["caption"].endswith("the terms")
        assert ("application/pdf", "terms.pdf", b"%PDF-1.7 terms") in graph.uploads
        await desk.close()

"""WhatsApp webhooks through real HTTP: verification, signatures, dedupe, media, statuses."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import AsyncIterator

import aiohttp
import pytest

from bots.whatsapp.channel import WhatsAppChannel, create
from tests.fake_graph import FakeGraph
from tests.webhook_support import Host, Recorder

FIXTURES = Path(__file__).parent / "fixtures" / "whatsapp"


class Rig:
    def __init__(self, graph: FakeGraph, host: Host, channel: WhatsAppChannel, hub: Recorder) -> None:
        self.graph, self.host, self.channel, self.hub = graph, host, channel, hub
        self.url = host.url + "/webhooks/wa"


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    graph = FakeGraph()
    await graph.start()
    host = Host(max_attachment_bytes=1000)
    settings = {"phone_number_id": graph.phone_number_id, "access_token": graph.access_token,
                "app_secret": graph.app_secret, "verify_token": "verify-me", "graph_url": graph.url,
                "api_version": "v21.0", "timeout": 2, "template": {"name": "reengage", "language": "en_US"}}
    channel = create("wa", settings, host.ctx("wa"))
    assert isinstance(channel, WhatsAppChannel)
    await host.start()
    hub = Recorder()
    await channel.start(hub)
    yield Rig(graph, host, channel, hub)
    await channel.stop()
    await host.stop()
    await graph.stop()


async def test_verification_echoes_challenge_only_with_the_right_token(rig: Rig) -> None:
    async with aiohttp.ClientSession() as s:
        ok = {"hub.mode": "subscribe", "hub.verify_token": "verify-me", "hub.challenge": "1158201444"}
        async with s.get(rig.url, params=ok) as resp:
            assert resp.status == 200 and await resp.text() == "1158201444"
        async with s.get(rig.url, params={**ok, "hub.verify_token": "wrong"}) as resp:
            assert resp.status == 403 and "1158201444" not in await resp.text()


@pytest.mark.parametrize("signature", [None, "sha256=" + "0" * 64, "sha1=abc", "garbage"])
async def test_bad_or_missing_signature_is_refused_and_nothing_journaled(rig: Rig, signature: str | None) -> None:
    status, _ = await rig.graph.post_webhook(rig.url, rig.graph.text_message("15551234567", "hello"), signature=signature)
    assert status == 401
    assert rig.hub.journal == [] and rig.hub.calls == 0


async def test_signature_of_another_body_is_refused(rig: Rig) -> None:
    body = json.dumps(rig.graph.text_message("15551234567", "hello")).encode()
    forged = body.replace(b"hello", b"hellO")
    status, _ = await rig.graph.post_webhook(rig.url, forged, signature=rig.graph.sign(body))
    assert status == 401 and rig.hub.calls == 0


async def test_text_message_becomes_inbound_after_journaling(rig: Rig) -> None:
    status, _ = await rig.graph.post_webhook(rig.url, rig.graph.text_message("15551234567", "Bonjour", wamid="wamid.A1", name="Zoé"))
    assert status == 200
    inbound = rig.hub.by_id("wamid.A1")
    assert (inbound.kind, inbound.text, inbound.chat) == ("message", "Bonjour", "15551234567")
    assert (inbound.sender.user, inbound.sender.display) == ("15551234567", "Zoé")
    assert json.loads(inbound.raw)["entry"][0]["changes"][0]["value"]["messages"][0]["id"] == "wamid.A1"


async def test_redelivered_webhook_becomes_one_message(rig: Rig) -> None:
    body = rig.graph.text_message("15551234567", "once", wamid="wamid.DUP")
    statuses = [ (await rig.graph.post_webhook(rig.url, body))[0] for _ in range(3)]
    concurrent = await asyncio.gather(*(rig.graph.post_webhook(rig.url, body) for _ in range(3)))
    assert statuses == [200] * 3 and [s for s, _ in concurrent] == [200] * 3
    assert [i.platform_id for i in rig.hub.journal] == ["wamid.DUP"]


async def test_journal_failure_answers_500_and_the_retry_is_journaled_once(rig: Rig) -> None:
    body = rig.graph.text_message("15551234567", "important", wamid="wamid.RETRY")
    rig.hub.fail_next = 1
    status, _ = await rig.graph.post_webhook(rig.url, body)
    assert status == 500 and rig.hub.journal == []
    status, _ = await rig.graph.post_webhook(rig.url, body)
    assert status == 200 and [i.text for i in rig.hub.journal] == ["important"]


async def test_not_started_answers_503(rig: Rig) -> None:
    await rig.channel.stop()
    status, _ = await rig.graph.post_webhook(rig.url, rig.graph.text_message("15551234567", "early"))
    assert status == 503 and rig.hub.calls == 0


@pytest.mark.parametrize("body", [b"{not json", b"", b"\xff\xfe\x00garbage", b'{"object":"page","entry":[]}', b"[1,2,3]",
                                  b'{"object":"whatsapp_business_account","entry":[{"changes":[{"field":"messages","value":{"messages":[{"type":"text"}]}}]}]}'])
async def test_signed_but_malformed_body_is_journaled_raw_as_event(rig: Rig, body: bytes) -> None:
    status, _ = await rig.graph.post_webhook(rig.url, body)
    assert status == 200
    assert len(rig.hub.journal) == 1
    event = rig.hub.journal[0]
    assert event.kind == "event" and event.raw == body and event.chat == "unknown"
    assert event.platform_id.startswith("raw:")
    status, _ = await rig.graph.post_webhook(rig.url, body)
    assert status == 200 and len(rig.hub.journal) == 1


async def test_media_is_fetched_through_the_graph_api(rig: Rig) -> None:
    rig.graph.add_media("m-1", b"%PDF-1.4 small", "application/pdf", declared_size=14)
    body = rig.graph.media_message("15551234567", "document", "m-1", "application/pdf", caption="the contract", filename="c.pdf")
    assert (await rig.graph.post_webhook(rig.url, body))[0] == 200
    inbound = rig.hub.journal[0]
    (att,) = inbound.attachments
    assert (att.name, att.mime, att.size, att.data, att.refused) == ("c.pdf", "application/pdf", 14, b"%PDF-1.4 small", "")
    assert inbound.text == "the contract" and att.platform_ref == "m-1"
    assert rig.graph.lookups == ["m-1"] and rig.graph.downloads == ["m-1"]


@pytest.mark.parametrize("declared", [5000, "5000"])
async def test_oversized_media_is_refused_before_download(rig: Rig, declared: int | str) -> None:
    rig.graph.add_media("big", b"x" * 5000, "image/jpeg", declared_size=declared)
    assert (await rig.graph.post_webhook(rig.url, rig.graph.media_message("15551234567", "image", "big", "image/jpeg")))[0] == 200
    (att,) = rig.hub.journal[0].attachments
    assert att.refused.startswith("too large") and att.size == 5000 and att.data == b""
    assert rig.graph.lookups == ["big"] and rig.graph.downloads == []


async def test_media_without_declared_size_is_cut_off_while_streaming(rig: Rig) -> None:
    rig.graph.add_media("sneaky", b"y" * 5000, "video/mp4", declared_size=None)
    assert (await rig.graph.post_webhook(rig.url, rig.graph.media_message("15551234567", "video", "sneaky", "video/mp4")))[0] == 200
    (att,) = rig.hub.journal[0].attachments
    assert att.refused.startswith("too large") and att.data == b""


async def test_graph_outage_during_media_fetch_answers_500_then_recovers(rig: Rig) -> None:
    rig.graph.add_media("m-2", b"voice", "audio/ogg")
    rig.graph.fail_next(status=503)
    body = rig.graph.media_message("15551234567", "audio", "m-2", "audio/ogg", wamid="wamid.VOICE")
    assert (await rig.graph.post_webhook(rig.url, body))[0] == 500
    assert rig.hub.calls == 0
    assert (await rig.graph.post_webhook(rig.url, body))[0] == 200
    assert rig.hub.by_id("wamid.VOICE").attachments[0].data == b"voice"


async def test_unknown_media_is_journaled_with_a_refusal(rig: Rig) -> None:
    body = rig.graph.media_message("15551234567", "sticker", "gone", "image/webp")
    assert (await rig.graph.post_webhook(rig.url, body))[0] == 200
    (att,) = rig.hub.journal[0].attachments
    assert att.refused.startswith("media lookup failed") and "does not exist" in att.refused


async def test_statuses_are_journaled_against_the_outgoing_message(rig: Rig) -> None:
    for body in (rig.graph.status("wamid.OUT7", "sent", "15551234567"),
                 rig.graph.status("wamid.OUT7", "delivered", "15551234567"),
                 rig.graph.status("wamid.OUT7", "failed", "15551234567", code=131047)):
        assert (await rig.graph.post_webhook(rig.url, body))[0] == 200
    texts = [(i.kind, i.text, i.reply_to, i.chat) for i in rig.hub.journal]
    assert texts == [("event", "status:sent", "wamid.OUT7", "15551234567"),
                     ("event", "status:delivered", "wamid.OUT7", "15551234567"),
                     ("event", "status:failed:131047 Re-engagement message", "wamid.OUT7", "15551234567")]
    assert all(i.platform_id.startswith("status:wamid.OUT7:") for i in rig.hub.journal)


@pytest.mark.parametrize("fixture", sorted(p.name for p in FIXTURES.glob("*.json") if not p.name.startswith("error_")))
async def test_every_sample_payload_is_accepted_and_journaled(rig: Rig, fixture: str) -> None:
    raw = (FIXTURES / fixture).read_bytes()
    rig.graph.add_media("1234567890987654321", b"sample-bytes", "application/octet-stream")
    rig.graph.add_media("765756756", b"sample-video", "video/mp4")
    status, _ = await rig.graph.post_webhook(rig.url, raw)
    assert status == 200
    assert len(rig.hub.journal) == 1 and rig.hub.journal[0].raw == raw


async def test_redelivery_during_a_slow_media_fetch_waits_for_it(rig: Rig) -> None:
    rig.graph.add_media("slow", b"pic", "image/jpeg")
    rig.graph.fail_next(delay=0.5)
    body = rig.graph.media_message("15551234567", "image", "slow", "image/jpeg", wamid="wamid.SLOW")

    async def again(after: float) -> tuple[int, str]:
        await asyncio.sleep(after)
        return await rig.graph.post_webhook(rig.url, body)

    assert [s for s, _ in await asyncio.gather(again(0.0), again(0.2))] == [200, 200]
    assert rig.graph.lookups == ["slow"] and rig.graph.downloads == ["slow"]
    assert rig.hub.calls == 1 and rig.hub.by_id("wamid.SLOW").attachments[0].data == b"pic"

"""WeChat pushes through real HTTP: URL check, signatures, safe mode, retries, media."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import AsyncIterator

import pytest

from bots.wechat.channel import WeChatChannel, create
from tests.fake_wechat import FakeWeChat
from tests.webhook_support import Host, Recorder

FIXTURES = Path(__file__).parent / "fixtures" / "wechat"
AES_KEY = "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR"
OPENID = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"


class Rig:
    def __init__(self, fake: FakeWeChat, host: Host, channel: WeChatChannel, hub: Recorder) -> None:
        self.fake, self.host, self.channel, self.hub = fake, host, channel, hub
        self.url = host.url + "/webhooks/wx"


async def make_rig(safe: bool) -> Rig:
    fake = FakeWeChat(encoding_aes_key=AES_KEY if safe else None)
    await fake.start()
    host = Host(max_attachment_bytes=1000)
    settings = {"app_id": fake.app_id, "app_secret": fake.app_secret, "token": fake.token, "api_url": fake.url, "timeout": 2}
    if safe:
        settings["encoding_aes_key"] = AES_KEY
    channel = create("wx", settings, host.ctx("wx"))
    assert isinstance(channel, WeChatChannel)
    await host.start()
    hub = Recorder()
    await channel.start(hub)
    return Rig(fake, host, channel, hub)


@pytest.fixture(params=["plain", "safe"])
async def rig(request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    r = await make_rig(request.param == "safe")
    yield r
    await r.channel.stop()
    await r.host.stop()
    await r.fake.stop()


@pytest.fixture
async def plain() -> AsyncIterator[Rig]:
    r = await make_rig(False)
    yield r
    await r.channel.stop()
    await r.host.stop()
    await r.fake.stop()


async def test_url_verification_echoes_echostr_only_when_signed(rig: Rig) -> None:
    assert await rig.fake.verify(rig.url, "5927782489442352469") == (200, "5927782489442352469")
    status, text = await rig.fake.verify(rig.url, "5927782489442352469", good=False)
    assert status == 403 and "5927782489442352469" not in text


async def test_text_push_is_journaled_then_answered_success(rig: Rig) -> None:
    xml = rig.fake.text(OPENID, "你好，我想咨询基金", msg_id=4363689963896700987, created=1411525903)
    assert await rig.fake.push(rig.url, xml) == (200, "success")
    inbound = rig.hub.by_id("4363689963896700987")
    assert (inbound.kind, inbound.text, inbound.chat, inbound.sender.user) == ("message", "你好，我想咨询基金", OPENID, OPENID)
    assert inbound.sent_at == 1411525903.0
    if rig.channel.crypto is None:
        assert inbound.raw == xml and inbound.decrypted == b""
    else:  # the body as received (the envelope) is the raw; the decrypted XML is kept beside it
        assert b"<Encrypt>" in inbound.raw and xml not in inbound.raw and inbound.decrypted == xml


async def test_bad_signature_is_refused_and_nothing_journaled(rig: Rig) -> None:
    xml = rig.fake.text(OPENID, "hello")
    query = rig.fake.signed_query("tampered" if rig.channel.crypto else None)
    query["signature"] = "f" * 40
    if rig.channel.crypto:
        body, _ = rig.fake.envelope(xml)
        status, _ = await rig.fake.push(rig.url, xml, query=query, body=body)
    else:
        status, _ = await rig.fake.push(rig.url, xml, query=query)
    assert status == 401 and rig.hub.calls == 0
    status, _ = await rig.fake.push(rig.url, xml, query={})
    assert status == 401 and rig.hub.calls == 0


async def test_safe_mode_refuses_a_plaintext_push_and_a_tampered_envelope() -> None:
    r = await make_rig(True)
    try:
        xml = r.fake.text(OPENID, "plain attempt")
        assert (await r.fake.push(r.url, xml, safe=False))[0] == 401
        body, query = r.fake.envelope(xml)
        tampered = body.replace(b"<Encrypt><![CDATA[", b"<Encrypt><![CDATA[AAAA")
        assert (await r.fake.push(r.url, xml, query=query, body=tampered))[0] == 401
        assert r.hub.calls == 0
    finally:
        await r.channel.stop()
        await r.host.stop()
        await r.fake.stop()


async def test_wechat_retries_become_one_message(rig: Rig) -> None:
    xml = rig.fake.text(OPENID, "retry me", msg_id=777)
    results = [await rig.fake.push(rig.url, xml) for _ in range(3)]
    results += await asyncio.gather(*(rig.fake.push(rig.url, xml) for _ in range(3)))
    assert results == [(200, "success")] * 6
    assert [i.platform_id for i in rig.hub.journal] == ["777"]


async def test_events_dedupe_by_sender_and_create_time(rig: Rig) -> None:
    sub = rig.fake.xml(OPENID, "event", created=1700000000, Event="subscribe")
    for _ in range(3):
        assert (await rig.fake.push(rig.url, sub))[0] == 200
    unsub = rig.fake.xml(OPENID, "event", created=1700000000, Event="unsubscribe")
    assert (await rig.fake.push(rig.url, unsub))[0] == 200
    assert [(i.platform_id, i.kind, i.text) for i in rig.hub.journal] == [
        (f"{OPENID}:1700000000:subscribe", "event", "event:subscribe"),
        (f"{OPENID}:1700000000:unsubscribe", "event", "event:unsubscribe")]


async def test_journal_failure_answers_500_not_success(rig: Rig) -> None:
    xml = rig.fake.text(OPENID, "keep me", msg_id=4242)
    rig.hub.fail_next = 1
    status, text = await rig.fake.push(rig.url, xml)
    assert status == 500 and text != "success" and rig.hub.journal == []
    assert await rig.fake.push(rig.url, xml) == (200, "success")
    assert [i.text for i in rig.hub.journal] == ["keep me"]


@pytest.mark.parametrize("body", [b"<xml><FromUserName>x", b"not xml at all", b"", b"<other/>",
                                  b'<!DOCTYPE xml [<!ENTITY a "aaaa">]><xml><Content>&a;</Content></xml>',
                                  b"<xml><Content>no sender</Content></xml>", "<xml>\u00e9".encode("latin-1")])
async def test_signed_but_malformed_body_is_journaled_raw(plain: Rig, body: bytes) -> None:
    assert await plain.fake.push(plain.url, body) == (200, "success")
    (event,) = plain.hub.journal
    assert event.kind == "event" and event.raw == body and event.platform_id.startswith("raw:")
    assert await plain.fake.push(plain.url, body) == (200, "success")
    assert len(plain.hub.journal) == 1


async def test_safe_mode_undecryptable_but_signed_envelope_is_journaled_raw() -> None:
    r = await make_rig(True)
    try:
        other = FakeWeChat(app_id="wx_other_app", encoding_aes_key=AES_KEY, token=r.fake.token)
        body, query = other.envelope(r.fake.text(OPENID, "for another app"))
        assert (await r.fake.push(r.url, b"", query=query, body=body))[0] == 200
        (event,) = r.hub.journal
        assert event.kind == "event" and "another app id" in event.text and event.raw == body
    finally:
        await r.channel.stop()
        await r.host.stop()
        await r.fake.stop()


async def test_image_media_is_fetched_with_the_access_token(rig: Rig) -> None:
    rig.fake.add_media("IMG1", b"\xff\xd8jpeg-bytes", "image/jpeg", filename="photo.jpg")
    xml = rig.fake.xml(OPENID, "image", PicUrl="http://mmbiz.example/pic", MediaId="IMG1")
    assert (await rig.fake.push(rig.url, xml))[0] == 200
    (att,) = rig.hub.journal[0].attachments
    assert (att.name, att.mime, att.data, att.refused) == ("photo.jpg", "image/jpeg", b"\xff\xd8jpeg-bytes", "")
    assert rig.fake.token_fetches == 1 and rig.fake.media_gets == ["IMG1"]


async def test_video_media_follows_the_video_url(plain: Rig) -> None:
    plain.fake.add_media("VID1", b"mp4-bytes", "video/mp4", as_video_url=True)
    xml = plain.fake.xml(OPENID, "video", MediaId="VID1", ThumbMediaId="T1")
    assert (await plain.fake.push(plain.url, xml))[0] == 200
    (att,) = plain.hub.journal[0].attachments
    assert att.data == b"mp4-bytes" and att.mime == "video/mp4"


async def test_oversized_media_is_refused_by_content_length(plain: Rig) -> None:
    plain.fake.add_media("BIG", b"v" * 5000, "audio/amr")
    xml = plain.fake.xml(OPENID, "voice", MediaId="BIG", Format="amr")
    assert (await plain.fake.push(plain.url, xml))[0] == 200
    (att,) = plain.hub.journal[0].attachments
    assert att.refused.startswith("too large") and att.size == 5000 and att.data == b""


async def test_expired_token_during_media_fetch_is_refreshed(plain: Rig) -> None:
    plain.fake.add_media("IMG2", b"img", "image/jpeg")
    await plain.channel.tokens.get()
    plain.fake.expire_tokens()
    assert (await plain.fake.push(plain.url, plain.fake.xml(OPENID, "image", MediaId="IMG2")))[0] == 200
    assert plain.hub.journal[0].attachments[0].data == b"img" and plain.fake.token_fetches == 2


async def test_missing_media_is_journaled_with_the_reason(plain: Rig) -> None:
    assert (await plain.fake.push(plain.url, plain.fake.xml(OPENID, "shortvideo", MediaId="GONE")))[0] == 200
    (att,) = plain.hub.journal[0].attachments
    assert "40007" in att.refused and att.platform_ref == "GONE"


@pytest.mark.parametrize("fixture", sorted(p.name for p in FIXTURES.glob("*.xml")))
async def test_every_sample_push_is_accepted(plain: Rig, fixture: str) -> None:
    raw = (FIXTURES / fixture).read_bytes()
    plain.fake.add_media("media_id", b"sample", "audio/amr")
    assert await plain.fake.push(plain.url, raw) == (200, "success")
    (inbound,) = plain.hub.journal
    assert inbound.raw == raw and not inbound.platform_id.startswith("raw:")


async def test_retries_during_a_slow_media_download_wait_for_it_and_fetch_once(plain: Rig) -> None:
    plain.fake.add_media("SLOW", b"voice-bytes", "audio/amr")
    await plain.channel.tokens.get()
    plain.fake.fail_next(delay=0.6)
    xml = plain.fake.xml(OPENID, "voice", MediaId="SLOW", Format="amr", msg_id=31337)

    async def retry(after: float) -> tuple[int, str]:
        await asyncio.sleep(after)
        return await plain.fake.push(plain.url, xml)

    results = await asyncio.gather(retry(0.0), retry(0.2), retry(0.4))
    assert results == [(200, "success")] * 3
    assert plain.fake.media_gets == ["SLOW"]
    (inbound,) = plain.hub.journal
    assert inbound.attachments[0].data == b"voice-bytes" and plain.hub.calls == 1


async def test_encrypted_push_to_a_plaintext_channel_is_journaled_raw(plain: Rig) -> None:
    safe_side = FakeWeChat(encoding_aes_key=AES_KEY, token=plain.fake.token, app_id=plain.fake.app_id)
    body, query = safe_side.envelope(plain.fake.text(OPENID, "switched to safe mode"))
    assert await plain.fake.push(plain.url, b"", query=query, body=body) == (200, "success")
    (event,) = plain.hub.journal
    assert event.kind == "event" and event.raw == body and "encoding_aes_key" in event.text


async def test_oversized_media_without_content_length_is_stopped_while_streaming(plain: Rig) -> None:
    plain.fake.add_media("CHUNKY", b"i" * 5000, "image/jpeg", chunked=True)
    plain.fake.add_media("SMALL", b"j" * 900, "image/jpeg", chunked=True)
    for media_id in ("CHUNKY", "SMALL"):
        assert (await plain.fake.push(plain.url, plain.fake.xml(OPENID, "image", MediaId=media_id)))[0] == 200
    big, small = (i.attachments[0] for i in plain.hub.journal)
    assert big.refused.startswith("too large") and "download stopped" in big.refused and big.data == b""
    assert small.refused == "" and small.data == b"j" * 900

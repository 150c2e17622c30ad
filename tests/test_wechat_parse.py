"""WeChat crypto against the WeCom test vectors, the push parser on the sample XML, and
fuzzing of both parsers (no exception escapes, nothing acknowledged unjournaled)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bots.wechat.channel import WeChatChannel, WeChatSettings
from bots.wechat.crypto import CryptoError, WeChatCrypto, sha1_signature
from bots.wechat.parse import parse_push
from tests.fake_wechat import FakeWeChat
from tests.webhook_support import Host, Recorder

FIXTURES = Path(__file__).parent / "fixtures" / "wechat"
VECTORS: list[dict[str, Any]] = json.loads((FIXTURES / "wecom-crypto-vectors.json").read_text())
AES_KEY = VECTORS[0]["encoding_aes_key"]


@pytest.mark.parametrize("v", VECTORS, ids=[v["name"] for v in VECTORS])
def test_vectors_signature_and_decrypt(v: dict[str, Any]) -> None:
    assert sha1_signature(v["token"], v["timestamp"], v["nonce"], v["encrypt"]) == v["msg_signature"]
    assert WeChatCrypto(v["encoding_aes_key"], v["app_id"]).decrypt(v["encrypt"]).decode() == v["plaintext"]


def test_vector_encrypt_with_fixed_random_prefix() -> None:
    v = VECTORS[1]
    crypto = WeChatCrypto(v["encoding_aes_key"], v["app_id"])
    assert crypto.encrypt(v["plaintext"].encode(), v["random_prefix"].encode()) == v["encrypt"]
    assert f"<Encrypt><![CDATA[{v['encrypt']}]]></Encrypt>" in v["expected_reply_xml"]
    assert f"<MsgSignature><![CDATA[{v['msg_signature']}]]></MsgSignature>" in v["expected_reply_xml"]


def test_echostr_vector_fails_with_another_nonce() -> None:
    v = VECTORS[2]
    assert sha1_signature(v["token"], v["timestamp"], "437374424", v["encrypt"]) != v["msg_signature"]


def test_decrypt_refuses_other_app_and_garbage() -> None:
    v = VECTORS[0]
    with pytest.raises(CryptoError, match="another app id"):
        WeChatCrypto(v["encoding_aes_key"], "wx_someone_else").decrypt(v["encrypt"])
    for bad in ("", "not base64!", "AAAA", v["encrypt"][:-8] + "AAAAAAA="):
        with pytest.raises(CryptoError):
            WeChatCrypto(v["encoding_aes_key"], v["app_id"]).decrypt(bad)


def test_decrypted_vector_parses_as_a_text_message() -> None:
    v = VECTORS[0]
    item = parse_push("wx", WeChatCrypto(AES_KEY, v["app_id"]).decrypt(v["encrypt"]))
    assert (item.inbound.text, item.inbound.sender.user, item.inbound.platform_id) == ("test", "messense", "4363689963896700987")


def push(name: str) -> Any:
    return parse_push("wx", (FIXTURES / name).read_bytes())


def test_sample_pushes() -> None:
    voice, video, location, link = push("voice.xml"), push("video.xml"), push("location.xml"), push("link.xml")
    assert (voice.media[0].media_id, voice.media[0].mime) == ("media_id", "application/octet-stream")
    assert voice.media[0].name == "voice-media_id.format" and voice.inbound.platform_id == "1234567890123456"
    assert video.media[0].mime == "video/mp4" and video.inbound.sent_at == 1357290913.0
    assert location.inbound.text == "[location] 位置信息 (23.134521, 113.358803)"
    assert link.inbound.text == "[link] 公众平台官网链接 — 公众平台官网链接 — url"
    sub, unsub = push("event_subscribe.xml"), push("event_unsubscribe.xml")
    assert (sub.inbound.kind, sub.inbound.text, sub.inbound.platform_id) == ("event", "event:subscribe", "FromUser:123456789:subscribe")
    assert sub.touches_window and not unsub.touches_window
    assert all(i.inbound.chat in ("fromUser", "FromUser") for i in (voice, video, location, link, sub, unsub))


def test_unknown_msgtype_is_an_event() -> None:
    item = parse_push("wx", FakeWeChat().xml("o1", "miniprogrampage", Title="t"))
    assert item.inbound.kind == "event" and "miniprogrampage" in item.inbound.text


xml_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30)
tags = st.sampled_from(["ToUserName", "FromUserName", "CreateTime", "MsgType", "Content", "MsgId", "MediaId",
                        "Event", "EventKey", "Format", "Location_X", "Label", "Title", "Url", "Encrypt"])
msgtypes = st.sampled_from(["text", "image", "voice", "video", "shortvideo", "location", "link", "event", "weird", ""])


@st.composite
def xml_pushes(draw: st.DrawFn) -> bytes:
    fields = draw(st.lists(st.tuples(tags, st.one_of(xml_text, msgtypes)), max_size=8))
    inner = "".join(f"<{t}><![CDATA[{v.replace(']]>', '')}]]></{t}>" for t, v in fields)
    return f"<xml>{inner}</xml>".encode()


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=200), xml_pushes()))
def test_fuzz_push_parser_never_raises_and_keeps_the_raw_body(body: bytes) -> None:
    item = parse_push("wx", body)
    assert item.inbound.raw == body and item.inbound.platform_id and item.inbound.chat
    assert item.inbound.kind in ("message", "event")


@settings(max_examples=60, deadline=None)
@given(st.one_of(st.binary(max_size=200), xml_pushes()), st.booleans(), st.integers(min_value=0, max_value=1))
def test_fuzz_receive_acknowledges_only_what_was_journaled(body: bytes, safe: bool, failures: int) -> None:
    async def run() -> None:
        host = Host()
        fake = FakeWeChat(app_id="wx49f0ab532d5d035a", encoding_aes_key=AES_KEY if safe else None)
        cfg = WeChatSettings.parse("wx", {"app_id": fake.app_id, "app_secret": "s", "token": fake.token,
                                          "api_url": "http://127.0.0.1:9", "timeout": 1,
                                          **({"encoding_aes_key": AES_KEY} if safe else {})})
        channel = WeChatChannel("wx", cfg, host.ctx("wx"))
        hub = Recorder(fail_next=failures)
        await channel.start(hub)
        if safe:
            wire, query = fake.envelope(body)
        else:
            wire, query = body, fake.signed_query()
        status = await channel.receive(query, wire)
        assert status in (200, 500)
        if status == 200:
            item = channel.authenticate(query, wire)
            assert not isinstance(item, str) and failures == 0
            assert item.inbound.platform_id in {i.platform_id for i in hub.journal}
        else:
            assert failures == 1
        assert await channel.receive({**query, "signature": "0" * 40, "msg_signature": "0" * 40}, wire) == 401
        await channel.stop()

    asyncio.run(run())


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=", max_size=200),
                 st.binary(min_size=1, max_size=96).map(lambda b: __import__("base64").b64encode(b).decode())))
def test_fuzz_signed_garbage_envelopes_are_journaled_raw(encrypted: str) -> None:
    async def run() -> None:
        host = Host()
        fake = FakeWeChat(encoding_aes_key=AES_KEY)
        cfg = WeChatSettings.parse("wx", {"app_id": fake.app_id, "app_secret": "s", "token": fake.token,
                                          "encoding_aes_key": AES_KEY, "api_url": "http://127.0.0.1:9"})
        channel = WeChatChannel("wx", cfg, host.ctx("wx"))
        hub = Recorder()
        await channel.start(hub)
        body = f"<xml><ToUserName>gh</ToUserName><Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>".encode()
        query = fake.signed_query(encrypted.strip())
        if not encrypted.strip():  # no Encrypt to check msg_signature against: refused, not journaled
            assert await channel.receive(query, body) == 401 and hub.calls == 0
            await channel.stop()
            return
        assert await channel.receive(query, body) == 200
        (journaled,) = hub.journal
        assert journaled.kind == "event" and journaled.raw == body and journaled.platform_id.startswith("raw:")
        await channel.stop()

    asyncio.run(run())

"""WeChat pushes are journaled exactly: a signature is valid only within its time window, a
safe-mode push needs its `Encrypt` element and msg_signature, and the envelope as received is
the raw payload (the decrypted XML beside it)."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any, AsyncIterator

import pytest

from bots.base import ChannelConfigError
from bots.wechat.channel import WeChatChannel, WeChatSettings, create
from bots.wechat.crypto import sha1_signature
from tests.e2e_support import running, web_config
from tests.fake_wechat import FakeWeChat
from tests.webhook_support import Host, Recorder

AES_KEY = "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR"
OPENID = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"
Y2001 = 1000000000


def query_at(fake: FakeWeChat, timestamp: int, encrypted: str | None = None) -> dict[str, str]:
    """A correctly signed query, as WeChat would have sent it at `timestamp`."""
    ts, nonce = str(timestamp), "271828"
    q = {"signature": sha1_signature(fake.token, ts, nonce), "timestamp": ts, "nonce": nonce}
    if encrypted is not None:
        q["encrypt_type"] = "aes"
        q["msg_signature"] = sha1_signature(fake.token, ts, nonce, encrypted)
    return q


async def channel_for(fake: FakeWeChat, host: Host, **extra: Any) -> tuple[WeChatChannel, Recorder]:
    settings = {"app_id": fake.app_id, "app_secret": fake.app_secret, "token": fake.token, "api_url": fake.url,
                "timeout": 2, **extra}
    if fake.encoding_aes_key:
        settings["encoding_aes_key"] = fake.encoding_aes_key
    channel = create("wx", settings, host.ctx("wx"))
    assert isinstance(channel, WeChatChannel)
    hub = Recorder()
    await channel.start(hub)
    return channel, hub


@pytest.fixture
async def rigs() -> AsyncIterator[tuple[Host, str, FakeWeChat, Recorder, FakeWeChat, Recorder]]:
    """A plaintext-mode channel at /webhooks/wx and a safe-mode one at /webhooks/wxs, one host."""
    plain, safe = FakeWeChat(), FakeWeChat(encoding_aes_key=AES_KEY)
    await plain.start()
    await safe.start()
    host = Host()
    ch1, hub1 = await channel_for(plain, host)
    settings = {"app_id": safe.app_id, "app_secret": safe.app_secret, "token": safe.token, "api_url": safe.url,
                "encoding_aes_key": AES_KEY, "path": "/webhooks/wxs"}
    ch2 = create("wxs", settings, host.ctx("wxs"))
    hub2 = Recorder()
    await ch2.start(hub2)
    await host.start()
    yield host, host.url, plain, hub1, safe, hub2
    await ch1.stop()
    await ch2.stop()
    await host.stop()
    await safe.stop()
    await plain.stop()


async def test_a_signature_from_2001_with_a_new_body_is_refused_in_plaintext_mode(rigs: Any) -> None:
    host, url, plain, hub, _, _ = rigs
    xml = plain.text(OPENID, "transfer everything to account 99", msg_id=1)
    status, text = await plain.push(url + "/webhooks/wx", xml, query=query_at(plain, Y2001))
    assert status == 403 and "window" in text and hub.calls == 0
    future = await plain.push(url + "/webhooks/wx", xml, query=query_at(plain, int(time.time()) + 3600))
    assert future[0] == 403 and "future" in future[1] and hub.calls == 0
    assert await plain.push(url + "/webhooks/wx", xml) == (200, "success")
    assert [i.text for i in hub.journal] == ["transfer everything to account 99"]


async def test_the_url_check_refuses_a_stale_signature(rigs: Any) -> None:
    host, url, plain, _, _, _ = rigs
    assert plain._session is not None
    q = {**query_at(plain, Y2001), "echostr": "e-1"}
    async with plain._session.get(url + "/webhooks/wx", params=q) as resp:
        assert resp.status == 403 and "e-1" not in await resp.text()


async def test_safe_mode_refuses_a_replayed_query_with_a_body_without_encrypt(rigs: Any) -> None:
    host, url, _, _, safe, hub = rigs
    body, query = safe.envelope(safe.text(OPENID, "the genuine push"))
    assert (await safe.push(url + "/webhooks/wxs", b"", query=query, body=body)) == (200, "success")
    junk = [f"<xml><FromUserName>{OPENID}</FromUserName><MsgType>text</MsgType><Content>junk {i}</Content>"
            f"<MsgId>{i}</MsgId></xml>".encode() for i in range(20)] + [b"not xml", b""]
    for bad in junk:
        status, text = await safe.push(url + "/webhooks/wxs", b"", query=query, body=bad)
        assert status == 401 and "Encrypt" in text
    assert hub.calls == 1 and [i.text for i in hub.journal] == ["the genuine push"]


async def test_a_plaintext_channel_refuses_an_aes_push_without_encrypt(rigs: Any) -> None:
    host, url, plain, hub, _, _ = rigs
    query = {**plain.signed_query(), "encrypt_type": "aes", "msg_signature": "0" * 40}
    status, _ = await plain.push(url + "/webhooks/wx", b"", query=query, body=plain.text(OPENID, "x"))
    assert status == 401 and hub.calls == 0


async def test_safe_mode_refuses_a_correct_envelope_signed_long_ago(rigs: Any) -> None:
    host, url, _, _, safe, hub = rigs
    body, _ = safe.envelope(safe.text(OPENID, "old"))
    encrypted = body.split(b"<![CDATA[")[2].split(b"]]>")[0].decode()
    status, text = await safe.push(url + "/webhooks/wxs", b"", query=query_at(safe, Y2001, encrypted), body=body)
    assert status == 403 and "window" in text and hub.calls == 0


async def test_the_window_is_configurable_and_checked() -> None:
    fake = FakeWeChat()
    await fake.start()
    host = Host()
    try:
        channel, hub = await channel_for(fake, host, signature_window=3600)
        assert channel.settings.signature_window == 3600.0
        xml = fake.text(OPENID, "half an hour late")
        assert not isinstance(channel.authenticate(query_at(fake, int(time.time()) - 1800), xml), str)
        assert isinstance(channel.authenticate(query_at(fake, int(time.time()) - 7200), xml), str)
        assert WeChatSettings.parse("wx", {"app_id": "a", "app_secret": "s", "token": "t"}).signature_window == 300.0
        for bad in ("soon", 0, -5, True):
            with pytest.raises(ChannelConfigError, match="signature_window"):
                WeChatSettings.parse("wx", {"app_id": "a", "app_secret": "s", "token": "t", "signature_window": bad})
        await channel.stop()
    finally:
        await fake.stop()


async def test_safe_mode_journals_the_envelope_as_received_and_the_decrypted_xml_beside_it(tmp_path: Path) -> None:
    wechat = FakeWeChat(encoding_aes_key=AES_KEY)
    await wechat.start()
    cfg = web_config(tmp_path / "data")
    cfg["channels"]["wechat"] = {
        "network": "wechat", "side": "client", "app_id": wechat.app_id, "app_secret": wechat.app_secret,
        "token": wechat.token, "encoding_aes_key": AES_KEY, "api_url": wechat.url, "timeout": 5}
    cfg["desks"]["advisors"]["clients"] += ["wechat"]
    try:
        async with running(cfg) as relay:
            url = f"{relay.base_url}/webhooks/wechat"
            small = wechat.text(OPENID, "你好", msg_id=501)
            large = wechat.text(OPENID, "长" * 7000, msg_id=502)  # 21 KB of XML: both kept as blobs
            sent: dict[int, tuple[bytes, bytes]] = {}
            for mid, xml in ((501, small), (502, large)):
                body, query = wechat.envelope(xml)
                assert await wechat.push(url, b"", query=query, body=body) == (200, "success")
                sent[mid] = (body, xml)
            stale_body, _ = wechat.envelope(wechat.text(OPENID, "replayed", msg_id=503))
            enc = stale_body.split(b"<![CDATA[")[2].split(b"]]>")[0].decode()
            assert (await wechat.push(url, b"", query=query_at(wechat, Y2001, enc), body=stale_body))[0] == 403
            rows = await relay.journal.fetchall(
                "SELECT body_json FROM events WHERE kind = 'message.received' ORDER BY seq")
            bodies = {int(b["platform_id"]): b for b in (json.loads(r["body_json"]) for r in rows)}
            assert sorted(bodies) == [501, 502]

            async def blob_or_inline(body: dict[str, Any], prefix: str) -> bytes:
                if body.get(f"{prefix}_inline") is not None:
                    data = base64.b64decode(body[f"{prefix}_inline"])
                    assert body[f"{prefix}_digest"] == __import__("hashlib").sha256(data).hexdigest()
                    return data
                data = await relay.journal.get_blob(body[f"{prefix}_sha256"])
                assert data is not None
                return data

            for mid, (envelope, xml) in sent.items():
                assert await blob_or_inline(bodies[mid], "raw") == envelope
                assert await blob_or_inline(bodies[mid], "decrypted") == xml
            assert "decrypted_sha256" in bodies[502] and "decrypted_inline" in bodies[501]
            report = await relay.journal.verify()
            assert report.ok, report
    finally:
        await wechat.stop()

"""WeChat sending against the fake API: access_token caching and refresh, the 48-hour window,
error codes, media upload."""

from __future__ import annotations

import time
from typing import AsyncIterator

import pytest

from bots.base import ChannelConfigError, Permanent, Retryable
from bots.wechat.channel import WeChatChannel, create, split_utf8
from relay.model import Attachment, Outgoing, Party
from tests.fake_wechat import FakeWeChat
from tests.webhook_support import Host, Recorder

OPENID = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"


class Rig:
    def __init__(self, fake: FakeWeChat, host: Host, channel: WeChatChannel, hub: Recorder) -> None:
        self.fake, self.host, self.channel, self.hub = fake, host, channel, hub
        self.url = host.url + "/webhooks/wx"

    async def client_writes(self, text: str = "在吗", ago: float = 0.0) -> None:
        xml = self.fake.text(OPENID, text, created=int(time.time() - ago))
        assert (await self.fake.push(self.url, xml))[0] == 200


def settings(fake: FakeWeChat) -> dict[str, object]:
    return {"app_id": fake.app_id, "app_secret": fake.app_secret, "token": fake.token, "api_url": fake.url, "timeout": 0.5}


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    fake = FakeWeChat()
    await fake.start()
    host = Host()
    channel = create("wx", settings(fake), host.ctx("wx"))
    assert isinstance(channel, WeChatChannel)
    await host.start()
    hub = Recorder()
    await channel.start(hub)
    yield Rig(fake, host, channel, hub)
    await channel.stop()
    await host.stop()
    await fake.stop()


def out(text: str, message_id: str = "m-1", **kw: object) -> Outgoing:
    return Outgoing(conversation="c-1", to=Party("wx", OPENID), text=text, message_id=message_id, **kw)  # type: ignore[arg-type]


async def test_text_reply_goes_through_the_customer_service_api(rig: Rig) -> None:
    await rig.client_writes()
    assert await rig.channel.send(out("您好，我是理财顾问")) == "custom:m-1"
    assert rig.fake.sent == [{"touser": OPENID, "msgtype": "text", "text": {"content": "您好，我是理财顾问"}}]


async def test_access_token_is_cached_until_expiry(rig: Rig) -> None:
    await rig.client_writes()
    for i in range(3):
        await rig.channel.send(out(f"n{i}", message_id=f"m-{i}"))
    assert rig.fake.token_fetches == 1 and len(rig.fake.sent) == 3


async def test_token_near_expiry_is_refetched(rig: Rig) -> None:
    rig.fake.expires_in = 200
    await rig.client_writes()
    await rig.channel.send(out("a", message_id="m-a"))
    await rig.channel.send(out("b", message_id="m-b"))
    assert rig.fake.token_fetches == 2


@pytest.mark.parametrize("code", [40001, 40014, 42001])
async def test_expired_token_codes_refresh_and_retry_once(rig: Rig, code: int) -> None:
    await rig.client_writes()
    await rig.channel.tokens.get()
    rig.fake.fail_next(errcode=code)
    assert await rig.channel.send(out("still delivered")) == "custom:m-1"
    assert rig.fake.token_fetches == 2 and len(rig.fake.sent) == 1


async def test_token_survives_a_restart_through_state(rig: Rig) -> None:
    await rig.client_writes()
    await rig.channel.send(out("first", message_id="m-a"))
    restarted = Host()
    restarted.state = rig.host.state
    again = create("wx", settings(rig.fake), restarted.ctx("wx"))
    try:
        await again.send(out("second", message_id="m-b"))
    finally:
        await again.stop()
    assert rig.fake.token_fetches == 1 and len(rig.fake.sent) == 2


@pytest.mark.parametrize("code,after", [(-1, 1.0), (45009, 60.0)])
async def test_busy_and_frequency_codes_are_retryable(rig: Rig, code: int, after: float) -> None:
    await rig.client_writes()
    rig.fake.fail_next(errcode=code)
    with pytest.raises(Retryable) as info:
        await rig.channel.send(out("x"))
    assert info.value.after == after and str(code) in info.value.reason


@pytest.mark.parametrize("fault", [{"status": 502}, {"delay": 1.0}])
async def test_5xx_and_timeouts_are_retryable(rig: Rig, fault: dict[str, object]) -> None:
    await rig.client_writes()
    await rig.channel.tokens.get()
    rig.fake.fail_next(**fault)  # type: ignore[arg-type]
    with pytest.raises(Retryable):
        await rig.channel.send(out("x"))


async def test_other_codes_are_permanent(rig: Rig) -> None:
    await rig.client_writes()
    rig.fake.fail_next(errcode=40003)
    with pytest.raises(Permanent, match="40003"):
        await rig.channel.send(out("x"))


async def test_past_48_hours_nothing_is_sent_and_the_failure_says_why(rig: Rig) -> None:
    await rig.client_writes(ago=49 * 3600)
    with pytest.raises(Permanent) as info:
        await rig.channel.send(out("too late"))
    assert "48-hour" in info.value.reason and "last wrote" in info.value.reason
    assert rig.fake.sent == [] and rig.fake.token_fetches == 0


async def test_unknown_client_is_outside_the_window(rig: Rig) -> None:
    with pytest.raises(Permanent, match="48-hour"):
        await rig.channel.send(out("cold"))


async def test_network_45015_is_the_window_failure(rig: Rig) -> None:
    await rig.channel.window.touch(OPENID, time.time())
    with pytest.raises(Permanent, match="48-hour.*45015"):
        await rig.channel.send(out("state says open, WeChat says no"))


async def test_unsubscribe_does_not_reopen_the_window(rig: Rig) -> None:
    await rig.client_writes(ago=49 * 3600)
    xml = rig.fake.xml(OPENID, "event", Event="unsubscribe")
    assert (await rig.fake.push(rig.url, xml))[0] == 200
    with pytest.raises(Permanent, match="48-hour"):
        await rig.channel.send(out("bye?"))


async def test_media_is_uploaded_then_sent(rig: Rig) -> None:
    await rig.client_writes()
    img = Attachment.of("chart.png", "image/png", b"\x89PNG")
    await rig.channel.send(out("见附件", attachments=(img,)))
    assert [u[:2] for u in rig.fake.uploads] == [("image", "chart.png")]
    text, image = rig.fake.sent
    assert text["text"]["content"] == "见附件" and image["msgtype"] == "image" and image["image"]["media_id"].startswith("MEDIA_")


async def test_unsupported_attachment_is_refused_before_anything_is_sent(rig: Rig) -> None:
    await rig.client_writes()
    pdf = Attachment.of("terms.pdf", "application/pdf", b"%PDF")
    with pytest.raises(Permanent, match="application/pdf"):
        await rig.channel.send(out("terms", attachments=(pdf,)))
    video = Attachment.of("clip.mp4", "video/mp4", b"mp4")
    with pytest.raises(Permanent, match="thumbnail"):
        await rig.channel.send(out("clip", message_id="m-2", attachments=(video,)))
    assert rig.fake.sent == [] and rig.fake.uploads == []


async def test_retry_after_partial_send_skips_the_sent_part(rig: Rig) -> None:
    await rig.client_writes()
    img = Attachment.of("a.jpg", "image/jpeg", b"jpg")
    await rig.channel.tokens.get()
    rig.fake.fail_next()
    rig.fake.fail_next(errcode=-1)
    with pytest.raises(Retryable):
        await rig.channel.send(out("caption", attachments=(img,)))
    await rig.channel.send(out("caption", attachments=(img,)))
    assert [s["msgtype"] for s in rig.fake.sent] == ["text", "image"]


def test_long_chinese_text_splits_on_character_boundaries() -> None:
    text = "内" * 1000
    chunks = split_utf8(text, 2048)
    assert "".join(chunks) == text and all(len(c.encode()) <= 2048 for c in chunks) and len(chunks) == 2


async def test_config_errors_name_the_field() -> None:
    host = Host()
    with pytest.raises(ChannelConfigError, match="token"):
        create("wx", {"app_id": "a", "app_secret": "s"}, host.ctx("wx"))
    with pytest.raises(ChannelConfigError, match="encoding_aes_key"):
        create("wx", {"app_id": "a", "app_secret": "s", "token": "t", "encoding_aes_key": "short"}, host.ctx("wx"))

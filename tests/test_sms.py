"""The Twilio SMS adapter against the fake Twilio API: signed webhooks, dedupe, MMS size
limits, status callbacks, STOP/START, and sending with segment splitting and retries."""

from __future__ import annotations

from typing import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from bots.base import ChannelConfigError, Permanent, Retryable
from bots.sms.channel import SmsChannel, create
from bots.sms.optout import keyword
from bots.sms.segments import encoding, messages, segments
from relay.model import Attachment, Outgoing, Party
from tests.e2e_support import free_port
from tests.fake_twilio import FakeTwilio, Fault, signature
from tests.webhook_support import Host, Recorder

CLIENT = "+14155550100"


class Rig:
    def __init__(self, twilio: FakeTwilio, host: Host, channel: SmsChannel, hub: Recorder, url: str) -> None:
        self.twilio, self.host, self.channel, self.hub, self.url = twilio, host, channel, hub, url


def settings(twilio: FakeTwilio, url: str, **over: object) -> dict[str, object]:
    base: dict[str, object] = {"account_sid": twilio.account_sid, "auth_token": twilio.auth_token,
                               "from_number": twilio.number, "api_url": twilio.url, "webhook_url": url,
                               "timeout": 2}
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    twilio = FakeTwilio()
    await twilio.start()
    host = Host(max_attachment_bytes=1000)
    port = free_port()
    url = f"http://127.0.0.1:{port}/webhooks/sms"
    channel = create("sms", settings(twilio, url), host.ctx("sms"))
    assert isinstance(channel, SmsChannel)
    runner = web.AppRunner(host.app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    hub = Recorder()
    await channel.start(hub)
    yield Rig(twilio, host, channel, hub, url)
    await channel.stop()
    await runner.cleanup()
    await twilio.stop()


def out(text: str, message_id: str = "m-1", to: str = CLIENT, **kw: object) -> Outgoing:
    return Outgoing(conversation="c-1", to=Party("sms", to), text=text, message_id=message_id, **kw)  # type: ignore[arg-type]


# --- segments and keywords -----------------------------------------------------------------

def test_gsm7_and_ucs2_segment_sizes() -> None:
    assert encoding("Hello {world} €5") == "GSM-7" and encoding("Grüße 你好") == "UCS-2"
    assert [len(s) for s in segments("a" * 160)] == [160]
    assert [len(s) for s in segments("a" * 161)] == [153, 8]
    assert [len(s) for s in segments("你" * 70)] == [70]
    assert [len(s) for s in segments("你" * 71)] == [67, 4]
    # an extension character costs two septets and is never cut in half
    assert [len(s) for s in segments("€" * 81)] == [76, 5]
    # an emoji is two UTF-16 units and stays whole
    parts = segments("😀" * 40)
    assert [len(p) for p in parts] == [33, 7] and "".join(parts) == "😀" * 40


def test_long_text_goes_as_bodies_of_at_most_max_segments() -> None:
    text = "x" * (153 * 12)
    bodies = messages(text, 10)
    assert [len(b) for b in bodies] == [1530, 306] and "".join(bodies) == text
    assert messages("short", 10) == ["short"] and messages("", 10) == []


def test_keywords() -> None:
    assert [keyword(w) for w in ("stop", " STOP ", "Unsubscribe", "start", "help", "stop please")] == [
        "stop", "stop", "stop", "start", "help", ""]


def test_config_errors_name_the_setting() -> None:
    host = Host()
    with pytest.raises(ChannelConfigError, match="from_number"):
        create("sms", {"account_sid": "AC1", "auth_token": "t"}, host.ctx("sms"))
    with pytest.raises(ChannelConfigError, match="unknown setting"):
        create("sms", {"account_sid": "AC1", "auth_token": "t", "from_number": "+1", "tokn": 1}, host.ctx("sms"))
    with pytest.raises(ChannelConfigError, match="client-side"):
        create("sms", {"account_sid": "AC1", "auth_token": "t", "from_number": "+1"}, host.ctx("sms", side="staff"))


# --- receiving -----------------------------------------------------------------------------

async def test_signed_message_is_journaled_once_and_bad_signatures_are_refused(rig: Rig) -> None:
    form = rig.twilio.inbound(CLIENT, "Hello, I need help with my account", sid="SM" + "a" * 32)
    assert (await rig.twilio.post(rig.url, form, sign=None))[0] == 403
    assert (await rig.twilio.post(rig.url, form, sign="AAAAAAAAAAAAAAAAAAAAAAAAAAA="))[0] == 403
    tampered = [(k, "I need money" if k == "Body" else v) for k, v in form]
    assert (await rig.twilio.post(rig.url, tampered, sign=signature(rig.twilio.auth_token, rig.url, form)))[0] == 403
    assert rig.hub.journal == []
    for _ in range(3):
        status, text = await rig.twilio.post(rig.url, form)
        assert status == 200 and "<Response>" in text
    (got,) = rig.hub.journal
    assert got.platform_id == "SM" + "a" * 32 and got.chat == CLIENT and got.text.startswith("Hello, I need help")
    assert got.kind == "message" and b"Body=Hello" in got.raw


async def test_journal_failure_answers_500_so_twilio_retries(rig: Rig) -> None:
    rig.hub.fail_next = 1
    form = rig.twilio.inbound(CLIENT, "retry me")
    assert (await rig.twilio.post(rig.url, form))[0] == 500
    assert (await rig.twilio.post(rig.url, form))[0] == 200
    assert [i.text for i in rig.hub.journal] == ["retry me"]


async def test_mms_media_within_the_limit_is_fetched_and_over_it_refused_unread(rig: Rig) -> None:
    small = rig.twilio.add_media("SMm1", "ME1", b"\x89PNG" + b"x" * 500, "image/png")
    big = rig.twilio.add_media("SMm1", "ME2", b"y" * 5000, "image/jpeg")
    chunked = rig.twilio.add_media("SMm1", "ME3", b"z" * 200_000, "application/pdf", declare_length=False)
    form = rig.twilio.inbound(CLIENT, "photos", sid="SMm1",
                              media=[(small, "image/png"), (big, "image/jpeg"), (chunked, "application/pdf")])
    assert (await rig.twilio.post(rig.url, form))[0] == 200
    (got,) = rig.hub.journal
    a, b, c = got.attachments
    assert a.data == b"\x89PNG" + b"x" * 500 and a.mime == "image/png" and not a.refused and a.name.endswith(".png")
    assert b.data == b"" and "not downloaded" in b.refused and b.size == 5000
    assert c.data == b"" and "download stopped" in c.refused


async def test_status_callbacks_become_receipts_and_failures(rig: Rig) -> None:
    sid = await rig.channel.send(out("Your statement is ready"))
    assert rig.twilio.sent[0]["StatusCallback"] == rig.url + "/status"
    assert await rig.twilio.deliver_statuses(sid, "queued", "sent", "delivered", "delivered") == [200] * 4
    assert [(i.kind, i.text, i.reply_to) for i in rig.hub.journal] == [
        ("event", "status:queued", sid), ("event", "status:sent", sid), ("event", "status:delivered", sid)]
    sid2 = await rig.channel.send(out("second", message_id="m-2"))
    await rig.twilio.deliver_statuses(sid2, "undelivered", error_code="30003")
    sid3 = await rig.channel.send(out("third", message_id="m-3"))
    await rig.twilio.deliver_statuses(sid3, "failed", error_code="30008")
    assert [i.text for i in rig.hub.journal[3:]] == ["error: undelivered (Twilio error 30003)",
                                                     "status:failed: Twilio error 30008"]
    bad = rig.twilio.status(sid, "delivered", CLIENT)
    assert (await rig.twilio.post(rig.url + "/status", bad, sign="x"))[0] == 403


async def test_stop_opts_the_number_out_until_start(rig: Rig) -> None:
    assert (await rig.twilio.post(rig.url, rig.twilio.inbound(CLIENT, "STOP")))[0] == 200
    assert rig.hub.journal[-1].text == "STOP"
    with pytest.raises(Permanent, match="opted out"):
        await rig.channel.send(out("are you there?"))
    assert rig.twilio.sent == []
    assert (await rig.twilio.post(rig.url, rig.twilio.inbound(CLIENT, "start")))[0] == 200
    assert await rig.channel.send(out("welcome back", message_id="m-2"))
    assert (await rig.twilio.post(rig.url, rig.twilio.inbound(CLIENT, "HELP")))[0] == 200
    assert rig.hub.journal[-1].text == "HELP" and rig.hub.journal[-1].kind == "message"
    assert await rig.channel.send(out("How can we help?", message_id="m-3"))
    assert [s["Body"] for s in rig.twilio.sent] == ["welcome back", "How can we help?"]


# --- sending -------------------------------------------------------------------------------

async def test_long_reply_is_split_on_segment_boundaries_and_resumes_after_a_failure(rig: Rig) -> None:
    text = "y" * (153 * 10) + "tail"
    rig.twilio.faults += [Fault(0), Fault(500)]  # the first part goes out, the second fails
    with pytest.raises(Retryable):
        await rig.channel.send(out(text))
    first = await rig.channel.send(out(text))
    assert first == rig.twilio.sent[0]["_sid"]
    assert [len(s["Body"]) for s in rig.twilio.sent] == [1530, 4]


async def test_partial_send_is_not_repeated_on_retry(rig: Rig) -> None:
    text = "y" * (153 * 10) + "tail"
    rig.channel.ctx.state.data["sent:m-9:0"] = "SMalready"  # type: ignore[attr-defined]
    assert await rig.channel.send(out(text, message_id="m-9")) == "SMalready"
    assert [s["Body"] for s in rig.twilio.sent] == ["tail"]


async def test_429_and_5xx_are_retryable_with_retry_after(rig: Rig) -> None:
    rig.twilio.fail_next(429, 20429, retry_after="7")
    with pytest.raises(Retryable) as info:
        await rig.channel.send(out("hi"))
    assert info.value.after == 7.0 and "20429" in info.value.reason
    rig.twilio.fail_next(503)
    with pytest.raises(Retryable, match="503"):
        await rig.channel.send(out("hi"))
    assert rig.twilio.sent == []
    assert await rig.channel.send(out("hi"))
    assert len(rig.twilio.sent) == 1


async def test_permanent_errors_name_the_code_and_21610_opts_out(rig: Rig) -> None:
    with pytest.raises(Permanent, match="21211"):
        await rig.channel.send(out("hi", to="not-a-number"))
    rig.twilio.unsubscribed.add(CLIENT)
    with pytest.raises(Permanent, match="21610"):
        await rig.channel.send(out("hi"))
    before = rig.twilio.requests
    with pytest.raises(Permanent, match="opted out"):
        await rig.channel.send(out("again", message_id="m-2"))
    assert rig.twilio.requests == before


async def test_files_go_as_mms_that_twilio_fetches_from_the_relay(rig: Rig) -> None:
    photo = Attachment.of("a.png", "image/png", b"\x89PNG" + b"i" * 300)
    pdf = Attachment.of("b.pdf", "application/pdf", b"%PDF-1.4")
    sid = await rig.channel.send(out("see files", attachments=(photo, pdf)))
    (sent,) = rig.twilio.sent
    assert sid == sent["_sid"] and sid.startswith("MM") and sent["Body"] == "see files"
    assert sent["_media"] == [("image/png", photo.data), ("application/pdf", pdf.data)]
    assert await rig.channel.send(out("", message_id="m-2", attachments=(pdf,)))
    assert rig.twilio.sent[1]["Body"] == "" and rig.twilio.sent[1]["_media"] == [("application/pdf", pdf.data)]
    async with aiohttp.ClientSession() as session:
        async with session.get(rig.url + "/media/guess") as resp:
            assert resp.status == 404


async def test_too_many_files_and_deletes_are_refused_with_a_reason(rig: Rig) -> None:
    files = tuple(Attachment.of(f"{i}.png", "image/png", b"x") for i in range(11))
    with pytest.raises(Permanent, match="at most 10 files"):
        await rig.channel.send(out("many", attachments=files))
    with pytest.raises(Permanent, match="cannot delete"):
        await rig.channel.send(out("", kind="delete", edits="SM1"))
    assert rig.twilio.sent == []


async def test_unreachable_api_is_retryable() -> None:
    host = Host()
    channel = create("sms", {"account_sid": "AC1", "auth_token": "t", "from_number": "+15005550006",
                             "api_url": f"http://127.0.0.1:{free_port()}", "timeout": 2}, host.ctx("sms"))
    try:
        with pytest.raises(Retryable, match="unreachable"):
            await channel.send(out("hi"))
    finally:
        await channel.stop()


async def test_oversized_body_is_refused_unread(rig: Rig) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(rig.url, data=b"Body=" + b"x" * 70_000,
                                headers={"Content-Type": "application/x-www-form-urlencoded"}) as resp:
            assert resp.status == 413 and "at most 65536 bytes" in await resp.text()
    assert rig.hub.journal == []

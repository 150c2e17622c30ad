"""The Slack staff adapter against the fake Slack Web API and Events sender, through
slack_sdk's AsyncWebClient: signing, threads per conversation, replies, edits, deletes,
files both ways within the limit, and Retry-After."""

from __future__ import annotations

import time
from typing import AsyncIterator

import pytest

from bots.base import ChannelConfigError, Permanent, Retryable
from bots.slack.channel import SlackChannel, create
from relay.model import Attachment, Outgoing, Party
from tests.fake_slack import FakeSlack
from tests.webhook_support import Host, Recorder

ALICE = "U0ALICE"


class Rig:
    def __init__(self, slack: FakeSlack, host: Host, channel: SlackChannel, hub: Recorder) -> None:
        self.slack, self.host, self.channel, self.hub = slack, host, channel, hub
        self.url = host.url + "/slack/slack-staff/events"


def settings(slack: FakeSlack, **over: object) -> dict[str, object]:
    base: dict[str, object] = {"bot_token": slack.token, "signing_secret": slack.signing_secret,
                               "channel": slack.channel, "api_url": slack.url + "/api/", "timeout": 3}
    base.update(over)
    return base


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    slack = FakeSlack()
    await slack.start()
    host = Host(max_attachment_bytes=1000)
    channel = create("slack-staff", settings(slack), host.ctx("slack-staff", side="staff"))
    assert isinstance(channel, SlackChannel)
    await host.start()
    hub = Recorder()
    await channel.start(hub)
    yield Rig(slack, host, channel, hub)
    await channel.stop()
    await host.stop()
    await slack.stop()


CLIENT = Party("sms", "+14155550100", "Casey Client")


def out(text: str, message_id: str = "m-1", conversation: str = "c-1", **kw: object) -> Outgoing:
    kw.setdefault("origin", CLIENT)
    kw.setdefault("client", CLIENT)
    return Outgoing(conversation=conversation, to=Party("slack-staff", ALICE), text=text, message_id=message_id,
                    **kw)  # type: ignore[arg-type]


def test_config_errors_name_the_setting() -> None:
    host = Host()
    with pytest.raises(ChannelConfigError, match="channel id"):
        create("s", {"bot_token": "x", "signing_secret": "y", "channel": "#advisors"}, host.ctx("s", side="staff"))
    with pytest.raises(ChannelConfigError, match="staff-side"):
        create("s", {"bot_token": "x", "signing_secret": "y", "channel": "C1"}, host.ctx("s"))
    with pytest.raises(ChannelConfigError, match="unknown setting"):
        create("s", {"bot_token": "x", "signing_secret": "y", "channel": "C1", "chanel": 1}, host.ctx("s", side="staff"))


async def test_url_verification_and_signature_checks(rig: Rig) -> None:
    challenge = {"token": "t", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
                 "type": "url_verification"}
    status, text = await rig.slack.post_event(rig.url, challenge)
    assert status == 200 and challenge["challenge"] in text
    assert (await rig.slack.post_event(rig.url, challenge, signature="v0=" + "0" * 64))[0] == 401
    assert (await rig.slack.post_event(rig.url, challenge, signature=None))[0] == 401
    stale = rig.slack.envelope(rig.slack.message(ALICE, "hello", None))
    assert (await rig.slack.post_event(rig.url, stale, timestamp=time.time() - 301))[0] == 401
    assert rig.hub.journal == []


async def test_each_conversation_gets_one_thread_that_survives_a_restart(rig: Rig) -> None:
    first = await rig.channel.send(out("Hello, I need help <now> & today"))
    second = await rig.channel.send(out("still there?", message_id="m-2"))
    other = await rig.channel.send(out("another client", message_id="m-3", conversation="c-2"))
    root, msg1, msg2, root2, msg3 = rig.slack.posts
    assert root["text"] == "New conversation: Casey Client (sms)" and "thread_ts" not in root
    assert msg1["thread_ts"] == msg2["thread_ts"] == root["ts"] and msg3["thread_ts"] == root2["ts"] != root["ts"]
    assert msg1["text"] == "Hello, I need help &lt;now&gt; &amp; today"
    assert first == f"{rig.slack.channel}:{msg1['ts']}" and second.endswith(msg2["ts"]) and other.endswith(msg3["ts"])
    restarted = Host()
    restarted.state = rig.host.state
    again = create("slack-staff", settings(rig.slack), restarted.ctx("slack-staff", side="staff"))
    try:
        await again.send(out("after restart", message_id="m-4"))
        assert rig.slack.posts[-1]["thread_ts"] == root["ts"] and len(rig.slack.posts) == 6
    finally:
        await again.stop()


async def test_reply_edit_and_delete_in_the_thread_become_inbounds(rig: Rig) -> None:
    await rig.channel.send(out("question"))
    thread = rig.slack.posts[0]["ts"]
    reply = rig.slack.message(ALICE, "Answer &lt;1&gt; &amp; more", thread)
    envelope = rig.slack.envelope(reply)
    assert (await rig.slack.post_event(rig.url, envelope))[0] == 200
    assert (await rig.slack.post_event(rig.url, envelope, retry=1))[0] == 200
    (got,) = rig.hub.journal
    assert got.kind == "message" and got.chat == "c-1" and got.sender.user == ALICE
    assert got.text == "Answer <1> & more" and got.platform_id == f"{rig.slack.channel}:{reply['ts']}"
    assert (await rig.slack.post_event(rig.url, rig.slack.envelope(rig.slack.edited(reply, "Answer 2"))))[0] == 200
    assert (await rig.slack.post_event(rig.url, rig.slack.envelope(rig.slack.deleted(reply))))[0] == 200
    edit, delete = rig.hub.journal[1:]
    assert (edit.kind, edit.text, edit.edits, edit.chat) == ("edit", "Answer 2", got.platform_id, "c-1")
    assert (delete.kind, delete.edits, delete.sender.user) == ("delete", got.platform_id, ALICE)
    echo = {**rig.slack.message(rig.slack.bot_user, "our own post", thread), "bot_id": "B0RELAY"}
    assert (await rig.slack.post_event(rig.url, rig.slack.envelope(echo)))[0] == 200
    top = rig.slack.message(ALICE, "lunch anyone?", None)
    assert (await rig.slack.post_event(rig.url, rig.slack.envelope(top)))[0] == 200
    reaction = {"type": "reaction_added", "user": ALICE, "reaction": "thumbsup",
                "item": {"type": "message", "channel": rig.slack.channel, "ts": reply["ts"]}}
    assert (await rig.slack.post_event(rig.url, rig.slack.envelope(reaction)))[0] == 200
    assert (await rig.slack.post_event(rig.url, b"not json at all"))[0] == 200
    assert [i.kind for i in rig.hub.journal] == ["message", "edit", "delete", "event", "event", "event"]
    assert rig.hub.journal[-1].raw == b"not json at all"


async def test_journal_failure_answers_500_so_slack_retries(rig: Rig) -> None:
    await rig.channel.send(out("question"))
    envelope = rig.slack.envelope(rig.slack.message(ALICE, "answer", rig.slack.posts[0]["ts"]))
    rig.hub.fail_next = 1
    assert (await rig.slack.post_event(rig.url, envelope))[0] == 500
    assert (await rig.slack.post_event(rig.url, envelope, retry=1))[0] == 200
    assert [i.text for i in rig.hub.journal] == ["answer"]


async def test_files_both_ways_within_the_limit(rig: Rig) -> None:
    await rig.channel.send(out("send me the form"))
    thread = rig.slack.posts[0]["ts"]
    small = rig.slack.add_file("form.pdf", b"%PDF-1.4 small", "application/pdf")
    big = rig.slack.add_file("video.mp4", b"v" * 5000, "video/mp4")
    event = rig.slack.message(ALICE, "here", thread, files=[small, big])
    assert (await rig.slack.post_event(rig.url, rig.slack.envelope(event)))[0] == 200
    (got,) = rig.hub.journal
    a, b = got.attachments
    assert a.data == b"%PDF-1.4 small" and a.name == "form.pdf" and not a.refused
    assert b.data == b"" and "not downloaded" in b.refused and rig.slack.downloads == [small["id"]]

    photo = Attachment.of("id.png", "image/png", b"\x89PNG" + b"p" * 100)
    refused = Attachment("huge.iso", "application/octet-stream", 10 ** 9, refused="too large")
    platform_id = await rig.channel.send(out("my id", message_id="m-2", attachments=(photo, refused)))
    text_post = rig.slack.posts[-1]
    assert "[file not delivered: huge.iso (too large)]" in text_post["text"] and text_post["thread_ts"] == thread
    (shared,) = rig.slack.shared
    assert shared["data"] == photo.data and shared["thread_ts"] == thread and shared["name"] == "id.png"
    assert platform_id == f"{rig.slack.channel}:{text_post['ts']}"


async def test_a_text_over_slacks_limit_goes_as_several_posts_in_the_thread(rig: Rig) -> None:
    text = "a" * 40000 + "b" * 10
    first = await rig.channel.send(out(text))
    root, one, two = rig.slack.posts
    assert one["text"] == "a" * 40000 and two["text"] == "b" * 10 and one["thread_ts"] == two["thread_ts"] == root["ts"]
    assert first.endswith(one["ts"])
    with pytest.raises(Permanent, match="40000-character"):
        await rig.channel.send(out(text, message_id="m-2", kind="edit", edits=first))


async def test_outgoing_edit_and_delete_update_the_posted_message(rig: Rig) -> None:
    platform_id = await rig.channel.send(out("first version"))
    await rig.channel.send(out("second version", message_id="m-2", kind="edit", edits=platform_id))
    assert rig.slack.updates[-1]["text"] == "second version" and rig.slack.posts[-1]["text"] == "second version"
    await rig.channel.send(out("", message_id="m-3", kind="delete", edits=platform_id))
    assert rig.slack.deletes[-1]["ts"] == platform_id.split(":")[1]
    with pytest.raises(Permanent, match="message_not_found"):
        await rig.channel.send(out("", message_id="m-4", kind="delete", edits=platform_id))


async def test_rate_limits_and_errors(rig: Rig) -> None:
    rig.slack.fail_next(429, retry_after="12")
    with pytest.raises(Retryable) as info:
        await rig.channel.send(out("hi"))
    assert info.value.after == 12.0 and "ratelimited" in info.value.reason
    rig.slack.fail_next(503, retry_after=None)
    with pytest.raises(Retryable, match="503"):
        await rig.channel.send(out("hi"))
    assert await rig.channel.send(out("hi"))
    bad = create("other", settings(rig.slack, channel="C0NOWHERE"), Host().ctx("other", side="staff"))
    try:
        with pytest.raises(Permanent, match="channel_not_found"):
            await bad.send(out("hi"))
    finally:
        await bad.stop()


async def test_notice_to_a_refused_employee_mentions_them_in_the_thread(rig: Rig) -> None:
    await rig.channel.send(out("question"))
    await rig.channel.send(Outgoing(conversation="c-1", to=Party("slack-staff", "U0BOB"), message_id="n-1",
                                    kind="notice", text="Not delivered (conversation is assigned to alice)"))
    notice = rig.slack.posts[-1]
    assert notice["text"].startswith("<@U0BOB> Not delivered") and notice["thread_ts"] == rig.slack.posts[0]["ts"]

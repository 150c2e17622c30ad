"""WhatsApp sending against the fake Graph API: text, media, the 24-hour window, error codes."""

from __future__ import annotations

import time
from typing import AsyncIterator

import pytest

from bots.base import ChannelConfigError, Permanent, Retryable
from bots.whatsapp.channel import WhatsAppChannel, create
from relay.model import Attachment, Outgoing, Party
from tests.fake_graph import FakeGraph
from tests.webhook_support import Host, Recorder

CLIENT = "15551234567"


class Rig:
    def __init__(self, graph: FakeGraph, host: Host, channel: WhatsAppChannel, hub: Recorder) -> None:
        self.graph, self.host, self.channel, self.hub = graph, host, channel, hub
        self.url = host.url + "/webhooks/wa"

    async def client_writes(self, text: str = "hi", ago: float = 0.0, wa_id: str = CLIENT) -> None:
        body = self.graph.text_message(wa_id, text, timestamp=time.time() - ago)
        assert (await self.graph.post_webhook(self.url, body))[0] == 200


def settings(graph: FakeGraph, **over: object) -> dict[str, object]:
    base: dict[str, object] = {"phone_number_id": graph.phone_number_id, "access_token": graph.access_token,
                               "app_secret": graph.app_secret, "verify_token": "v", "graph_url": graph.url,
                               "timeout": 0.5, "template": {"name": "reengage", "language": "en_US"}}
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


async def make_rig(**over: object) -> Rig:
    graph = FakeGraph()
    await graph.start()
    host = Host()
    channel = create("wa", settings(graph, **over), host.ctx("wa"))
    assert isinstance(channel, WhatsAppChannel)
    await host.start()
    hub = Recorder()
    await channel.start(hub)
    return Rig(graph, host, channel, hub)


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    r = await make_rig()
    yield r
    await r.channel.stop()
    await r.host.stop()
    await r.graph.stop()


def out(text: str, message_id: str = "m-1", **kw: object) -> Outgoing:
    return Outgoing(conversation="c-1", to=Party("wa", CLIENT), text=text, message_id=message_id, **kw)  # type: ignore[arg-type]


async def test_reply_inside_the_window_is_sent_as_text(rig: Rig) -> None:
    await rig.client_writes()
    wamid = await rig.channel.send(out("Hello from Alice", reply_to="wamid.Q"))
    (sent,) = rig.graph.sent
    assert wamid == sent["_wamid"]
    assert sent["type"] == "text" and sent["text"]["body"] == "Hello from Alice" and sent["to"] == CLIENT
    assert sent["context"] == {"message_id": "wamid.Q"}


async def test_reply_outside_the_window_sends_the_template_and_says_so(rig: Rig) -> None:
    await rig.client_writes(ago=25 * 3600)
    platform_id = await rig.channel.send(out("Your statement is ready"))
    (sent,) = rig.graph.sent
    assert sent["type"] == "template" and sent["template"] == {"name": "reengage", "language": {"code": "en_US"}}
    assert platform_id == f"template:{sent['_wamid']}"


async def test_client_never_seen_gets_the_template(rig: Rig) -> None:
    assert (await rig.channel.send(out("cold"))).startswith("template:")


async def test_network_refusal_131047_falls_back_to_the_template(rig: Rig) -> None:
    await rig.channel.window.touch(CLIENT, time.time())
    rig.graph.last_user_message[CLIENT] = time.time() - 30 * 3600
    platform_id = await rig.channel.send(out("stale window"))
    assert platform_id.startswith("template:") and [s["type"] for s in rig.graph.sent] == ["template"]


async def test_out_of_window_without_template_is_a_permanent_failure() -> None:
    r = await make_rig(template=None)
    try:
        with pytest.raises(Permanent, match="24-hour"):
            await r.channel.send(out("hello?"))
        assert r.graph.sent == []
    finally:
        await r.channel.stop()
        await r.host.stop()
        await r.graph.stop()


async def test_window_survives_a_restart_through_the_state_store(rig: Rig) -> None:
    await rig.client_writes()
    restarted = Host()
    restarted.state = rig.host.state
    again = create("wa", settings(rig.graph), restarted.ctx("wa"))
    try:
        assert not (await again.send(out("after restart", message_id="m-2"))).startswith("template:")
    finally:
        await again.stop()


@pytest.mark.parametrize("code,after", [(130429, 1.0), (131056, 6.0), (131048, 60.0), (80007, 60.0), (4, 60.0)])
async def test_rate_limit_codes_are_retryable(rig: Rig, code: int, after: float) -> None:
    await rig.client_writes()
    rig.graph.fail_next(code=code)
    with pytest.raises(Retryable) as info:
        await rig.channel.send(out("hi"))
    assert info.value.after == after and str(code) in info.value.reason
    assert rig.graph.sent == []
    assert await rig.channel.send(out("hi")) == rig.graph.sent[0]["_wamid"]


@pytest.mark.parametrize("fault", [{"status": 500}, {"status": 503}, {"code": 131000}, {"delay": 1.0}])
async def test_server_errors_and_timeouts_are_retryable(rig: Rig, fault: dict[str, object]) -> None:
    await rig.client_writes()
    rig.graph.fail_next(**fault)  # type: ignore[arg-type]
    with pytest.raises(Retryable):
        await rig.channel.send(out("hi"))


@pytest.mark.parametrize("code", [100, 131026, 190])
async def test_other_client_errors_are_permanent_with_the_message(rig: Rig, code: int) -> None:
    await rig.client_writes()
    rig.graph.fail_next(code=code)
    with pytest.raises(Permanent) as info:
        await rig.channel.send(out("hi"))
    assert f"WhatsApp error {code}" in info.value.reason


async def test_media_is_uploaded_then_sent_with_the_text_as_caption(rig: Rig) -> None:
    await rig.client_writes()
    png = Attachment.of("chart.png", "image/png", b"\x89PNG fake")
    pdf = Attachment.of("terms.pdf", "application/pdf", b"%PDF terms")
    wamid = await rig.channel.send(out("see attached", attachments=(png, pdf)))
    assert [u[:2] for u in rig.graph.uploads] == [("image/png", "chart.png"), ("application/pdf", "terms.pdf")]
    image, document = rig.graph.sent
    assert image["type"] == "image" and image["image"]["caption"] == "see attached" and wamid == image["_wamid"]
    assert document["type"] == "document" and document["document"]["filename"] == "terms.pdf"
    assert "caption" not in document["document"]


async def test_long_text_is_split_at_4096_characters(rig: Rig) -> None:
    await rig.client_writes()
    await rig.channel.send(out("a" * 5000))
    assert [len(s["text"]["body"]) for s in rig.graph.sent] == [4096, 904]


async def test_a_retry_after_a_partial_send_does_not_resend_the_sent_part(rig: Rig) -> None:
    await rig.client_writes()
    pdf = Attachment.of("terms.pdf", "application/pdf", b"%PDF terms")
    long_text = "b" * 2000
    rig.graph.fail_next()
    rig.graph.fail_next(code=130429)
    with pytest.raises(Retryable):
        await rig.channel.send(out(long_text, attachments=(pdf,)))
    assert [s["type"] for s in rig.graph.sent] == ["text"]
    await rig.channel.send(out(long_text, attachments=(pdf,)))
    assert [s["type"] for s in rig.graph.sent] == ["text", "document"]


async def test_delete_is_refused_and_edits_are_marked(rig: Rig) -> None:
    await rig.client_writes()
    with pytest.raises(Permanent, match="cannot delete"):
        await rig.channel.send(out("", kind="delete"))
    await rig.channel.send(out("corrected", message_id="m-9", kind="edit"))
    assert rig.graph.sent[-1]["text"]["body"] == "(edited) corrected"


async def test_config_errors_name_the_field() -> None:
    host = Host()
    with pytest.raises(ChannelConfigError, match="app_secret"):
        create("wa", {"phone_number_id": "1", "access_token": "t", "verify_token": "v"}, host.ctx("wa"))
    with pytest.raises(ChannelConfigError, match="app_secert"):
        create("wa", {"phone_number_id": "1", "access_token": "t", "verify_token": "v", "app_secret": "s",
                      "app_secert": "typo"}, host.ctx("wa"))
    with pytest.raises(ChannelConfigError, match="client"):
        create("wa", {"phone_number_id": "1", "access_token": "t", "verify_token": "v", "app_secret": "s"},
               host.ctx("wa", side="staff"))

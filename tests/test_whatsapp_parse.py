"""The WhatsApp webhook parser: every sample shape, and fuzzing (no exception escapes, nothing
acknowledged that was not journaled)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bots.whatsapp.channel import WhatsAppChannel, WhatsAppSettings, signature_ok
from bots.whatsapp.parse import parse_size, parse_webhook
from tests.fake_graph import FakeGraph
from tests.webhook_support import Host, Recorder

FIXTURES = Path(__file__).parent / "fixtures" / "whatsapp"


def parse(name: str) -> list[Any]:
    return parse_webhook("wa", (FIXTURES / name).read_bytes())


def one(name: str) -> Any:
    (item,) = parse(name)
    return item


def test_text_with_reply_context() -> None:
    item = one("reply_context.json")
    i = item.inbound
    assert (i.kind, i.text, i.platform_id, i.chat, i.reply_to) == ("message", "replied text", "wamid.xyzxyz", "972987654321", "wamid.xyzxyz==")
    assert i.sender.display == "Test Name" and i.sent_at == 1697044746.0 and item.touches_window


def test_forwarded_text_has_no_reply() -> None:
    i = one("text_forwarded.json").inbound
    assert i.text == "forwarded text" and i.reply_to is None


def test_media_types_name_their_media() -> None:
    for name, kind, mime, text in [("audio.json", "audio", "audio/ogg; codecs=opus", ""),
                                   ("audio_voice.json", "audio", "audio/ogg; codecs=opus", ""),
                                   ("document.json", "document", "application/pdf", "caption"),
                                   ("video.json", "video", "video/mp4", "caption"),
                                   ("sticker.json", "sticker", "image/webp", ""),
                                   ("sticker_animated.json", "sticker", "image/webp", "")]:
        item = one(name)
        (ref,) = item.media
        assert ref.mime == mime and ref.media_id and item.inbound.text == text, name
        assert item.inbound.kind == "message"
    assert one("document.json").media[0].name == "filename.pdf"
    assert one("video.json").media[0].name.startswith("video-765756756")


def test_location_contacts_interactive_button() -> None:
    assert one("location.json").inbound.text == ("[location] Facebook HQ, 1 Hacker Way, Menlo Park, CA 94025 "
                                                 "(37.4611978, -122.2164385) https://maps.google.com/?cid=2000000000000000000")
    assert one("location_current.json").inbound.text == "[location] (12.25089, 43.90539)"
    assert one("contacts.json").inbound.text.splitlines() == [
        "[contact] Chandler Bing; name.first_name: Chandler; name.last_name: Bing; phones.phone: +1 555-555-5555; "
        "phones.wa_id: 972987654321; phones.type: CELL",
        "[contact] Monica; name.first_name: Monica; phones.phone: +1 666-666-6666; phones.wa_id: 972987654321; phones.type: HOME",
        "[contact] Rachel Green; name.first_name: Rachel; name.last_name: Green; phones.phone: +1 777-777-7777; "
        "phones.wa_id: 972987654321; phones.type: WORK"]
    assert one("interactive_button_reply.json").inbound.text == "title"
    assert one("interactive_list_reply.json").inbound.text == "title — description"
    button = one("button.json").inbound
    assert button.text == "title" and button.reply_to == "wamid.xyzxyz=="


def test_reactions_point_at_the_reacted_message() -> None:
    added, removed = one("reaction.json").inbound, one("reaction_removed.json").inbound
    assert (added.kind, added.text, added.reply_to) == ("reaction", "😮", "wamid.yzxyzx=")
    assert (removed.kind, removed.text, removed.reply_to) == ("reaction", "", "wamid.yzxyzx=")


def test_unsupported_is_an_event_with_the_error() -> None:
    i = one("unsupported_no_subtype.json").inbound
    assert i.kind == "event" and i.text == "unsupported 131051 Message type unknown"


def test_statuses_name_the_outgoing_message() -> None:
    delivered, read, failed = (one(n).inbound for n in ("status_delivered.json", "status_read.json", "status_failed_130472.json"))
    assert delivered.text == "status:delivered" and delivered.reply_to == "wamid.xyzxyz"
    assert delivered.platform_id == "status:wamid.xyzxyz:delivered:1698266945"
    assert read.text == "status:read"
    assert failed.text == "status:failed:130472 User's number is part of an experiment"
    assert not one("status_read.json").touches_window and failed.sender.user == "whatsapp"


def test_unknown_type_and_unknown_field_are_events() -> None:
    g = FakeGraph()
    body = g.notification(messages=[{"from": "1", "id": "wamid.X", "timestamp": "1", "type": "order", "order": {}}])
    (item,) = parse_webhook("wa", json.dumps(body).encode())
    assert item.inbound.kind == "event" and "order" in item.inbound.text
    other = {"object": "whatsapp_business_account", "entry": [{"changes": [{"field": "account_update", "value": {}}]}]}
    (item,) = parse_webhook("wa", json.dumps(other).encode())
    assert item.inbound.kind == "event" and "account_update" in item.inbound.text


def test_file_size_as_string_or_number() -> None:
    assert [parse_size(v) for v in (12, "12", " 7 ", 3.0, "x", -1, None, True, 1.5)] == [12, 12, 7, 3, None, None, None, None, None]


def test_signature_check() -> None:
    body = b'{"a":1}'
    good = FakeGraph(app_secret="s").sign(body)
    assert signature_ok("s", body, good) and signature_ok("s", body, good.upper().replace("SHA256=", "sha256="))
    assert not signature_ok("s", body + b" ", good) and not signature_ok("t", body, good) and not signature_ok("s", body, None)


json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20))
json_tree = st.recursive(json_leaf, lambda c: st.one_of(st.lists(c, max_size=4),
                                                       st.dictionaries(st.sampled_from(
                                                           ["object", "entry", "changes", "value", "field", "messages",
                                                            "statuses", "contacts", "id", "from", "type", "text", "body",
                                                            "timestamp", "image", "reaction", "errors", "status", "context",
                                                            "interactive", "location", "wa_id", "profile", "name"]) | st.text(max_size=5),
                                                           c, max_size=5)), max_leaves=30)


def shaped(tree: Any) -> bytes:
    return json.dumps({"object": "whatsapp_business_account", "entry": [{"changes": [{"field": "messages", "value": tree}]}]}).encode()


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=200), json_tree.map(lambda t: json.dumps(t).encode()), json_tree.map(shaped)))
def test_fuzz_parser_never_raises_and_keeps_the_raw_body(body: bytes) -> None:
    items = parse_webhook("wa", body)
    assert items
    for item in items:
        assert item.inbound.raw == body and item.inbound.platform_id and item.inbound.chat
        assert item.inbound.kind in ("message", "reaction", "event")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=100), json_tree.map(shaped)), st.integers(min_value=0, max_value=2))
def test_fuzz_receive_acknowledges_only_what_was_journaled(body: bytes, failures: int) -> None:
    async def run() -> None:
        host = Host()
        cfg = WhatsAppSettings.parse("wa", {"phone_number_id": "1", "access_token": "t", "app_secret": "s",
                                            "verify_token": "v", "graph_url": "http://127.0.0.1:9", "timeout": 1})
        channel = WhatsAppChannel("wa", cfg, host.ctx("wa"))
        hub = Recorder(fail_next=failures)
        await channel.start(hub)
        status = await channel.receive(body, FakeGraph(app_secret="s").sign(body))
        journaled = {i.platform_id for i in hub.journal}
        expected = {item.inbound.platform_id for item in parse_webhook("wa", body) if item.account in ("", "1")}
        assert status in (200, 500)
        if status == 200:
            assert expected <= journaled and failures == 0
        assert await channel.receive(body, None) == 401
        await channel.stop()

    asyncio.run(run())

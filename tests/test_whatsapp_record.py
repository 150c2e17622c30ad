"""WhatsApp is journaled exactly: a webhook goes to the channel of the number it was sent to
(or nowhere), a downloaded file is checked against the SHA-256 Meta declared, an unsupported
message reaches the employee, and a contact card gives the policy all of its text."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, TypeVar

import pytest

from bots.base import ChannelConfigError
from bots.whatsapp.channel import WhatsAppChannel, create, digest_problem
from bots.whatsapp.parse import parse_webhook
from relay.app import RelayApp
from relay.policy import EvalInput, load_policy_dir
from tests.e2e_support import desk_socket, running, web_config
from tests.fake_graph import FakeGraph
from tests.webhook_support import Host, Recorder

T = TypeVar("T")
WA_ID = "4915112345678"
OTHER_NUMBER = "2233445566778"


def settings_for(graph: FakeGraph, number: str, **extra: Any) -> dict[str, Any]:
    return {"phone_number_id": number, "access_token": graph.access_token, "app_secret": graph.app_secret,
            "verify_token": "verify-me", "graph_url": graph.url, "timeout": 2, "path": "/webhooks/meta", **extra}


def for_number(graph: FakeGraph, doc: dict[str, Any], number: str) -> dict[str, Any]:
    doc["entry"][0]["changes"][0]["value"]["metadata"]["phone_number_id"] = number
    return doc


@pytest.fixture
async def graph() -> AsyncIterator[FakeGraph]:
    g = FakeGraph()
    await g.start()
    yield g
    await g.stop()


async def test_a_webhook_for_another_number_of_the_app_is_not_this_channels(
        graph: FakeGraph, caplog: pytest.LogCaptureFixture) -> None:
    host = Host()
    only = create("wa", settings_for(graph, graph.phone_number_id), host.ctx("wa"))
    hub = Recorder()
    await only.start(hub)
    await host.start()
    try:
        url = host.url + "/webhooks/meta"
        caplog.set_level(logging.WARNING)
        doc = for_number(graph, graph.text_message(WA_ID, "my iban is DE89 3704 0044 0532 0130 00"), OTHER_NUMBER)
        assert await graph.post_webhook(url, doc) == (200, "ok")
        assert hub.calls == 0 and hub.journal == []
        (line,) = [r.getMessage() for r in caplog.records if "not journaled" in r.getMessage()]
        assert OTHER_NUMBER in line and "iban" not in caplog.text and "DE89" not in caplog.text
        assert await graph.post_webhook(url, graph.text_message(WA_ID, "mine")) == (200, "ok")
        assert [(i.channel, i.text) for i in hub.journal] == [("wa", "mine")]
    finally:
        await only.stop()
        await host.stop()


async def test_two_numbers_of_one_app_share_the_url_and_each_gets_its_own(graph: FakeGraph) -> None:
    host = Host()
    a = create("wa-de", settings_for(graph, graph.phone_number_id), host.ctx("wa-de"))
    b = create("wa-fr", settings_for(graph, OTHER_NUMBER), host.ctx("wa-fr"))
    hub_a, hub_b = Recorder(), Recorder()
    await a.start(hub_a)
    await b.start(hub_b)
    await host.start()
    try:
        url = host.url + "/webhooks/meta"
        assert await graph.post_webhook(url, graph.text_message(WA_ID, "bonjour", wamid="wamid.FR1")) == (200, "ok")
        assert await graph.post_webhook(url, for_number(graph, graph.text_message(WA_ID, "salut", wamid="wamid.FR2"),
                                                         OTHER_NUMBER)) == (200, "ok")
        assert [(i.channel, i.sender.channel, i.text) for i in hub_a.journal] == [("wa-de", "wa-de", "bonjour")]
        assert [(i.channel, i.sender.channel, i.text) for i in hub_b.journal] == [("wa-fr", "wa-fr", "salut")]
        both = graph.text_message(WA_ID, "to de", wamid="wamid.X1")
        extra = for_number(graph, graph.text_message(WA_ID, "to fr", wamid="wamid.X2"), OTHER_NUMBER)
        both["entry"][0]["changes"] += extra["entry"][0]["changes"]
        assert await graph.post_webhook(url, both) == (200, "ok")
        assert [i.text for i in hub_a.journal] == ["bonjour", "to de"] and [i.text for i in hub_b.journal] == ["salut", "to fr"]
        with pytest.raises(ChannelConfigError, match="already channel wa-fr's"):
            create("wa-dup", settings_for(graph, OTHER_NUMBER), host.ctx("wa-dup"))
        with pytest.raises(ChannelConfigError, match="one URL is one Meta app"):
            create("wa-x", settings_for(graph, "999", app_secret="another-app"), host.ctx("wa-x"))
    finally:
        await a.stop()
        await b.stop()
        await host.stop()


async def test_a_download_whose_bytes_differ_from_the_declared_sha256_is_kept_and_marked(graph: FakeGraph) -> None:
    host = Host()
    channel = create("wa", settings_for(graph, graph.phone_number_id), host.ctx("wa"))
    assert isinstance(channel, WhatsAppChannel)
    hub = Recorder()
    await channel.start(hub)
    await host.start()
    try:
        url = host.url + "/webhooks/meta"
        graph.add_media("GOOD", b"%PDF-statement", "application/pdf")
        graph.add_media("BAD", b"%PDF-statement", "application/pdf", served=b"%PDF-something-else")
        for media_id in ("GOOD", "BAD"):
            doc = graph.media_message(WA_ID, "document", media_id, "application/pdf", filename=f"{media_id}.pdf")
            assert await graph.post_webhook(url, doc) == (200, "ok")
        good, bad = (i.attachments[0] for i in hub.journal)
        assert good.integrity == "" and good.data == b"%PDF-statement"
        assert bad.data == b"%PDF-something-else" and bad.refused == ""
        assert bad.integrity.startswith("sha256 mismatch") and hashlib.sha256(b"%PDF-statement").hexdigest() in bad.integrity
    finally:
        await channel.stop()
        await host.stop()
    data = b"abc"
    b64 = __import__("base64").b64encode(hashlib.sha256(data).digest()).decode()
    assert digest_problem(data, webhook=b64, lookup=hashlib.sha256(data).hexdigest()) == ""
    assert digest_problem(data, webhook="aGVsbG8=", lookup=None) == ""  # not a SHA-256: nothing to compare
    assert "webhook declared" in digest_problem(data, webhook=__import__("base64").b64encode(b"x" * 32).decode())


def test_a_contact_card_gives_the_policy_all_of_its_text(tmp_path: Path) -> None:
    card = {"name": {"formatted_name": "Dana Scully", "first_name": "Dana", "last_name": "Scully", "prefix": "Dr."},
            "phones": [{"phone": "+1 202 555 0100", "type": "WORK"}],
            "emails": [{"email": "dana@example.org", "type": "WORK"}],
            "org": {"company": "Acme Fund", "department": "Private Placements", "title": "Insider Relations"},
            "addresses": [{"street": "1 Main St", "city": "Washington", "zip": "20001", "country": "US", "type": "WORK"}],
            "urls": [{"url": "https://acme.example/offer", "type": "WORK"}],
            "birthday": "1964-02-23"}
    doc = {"object": "whatsapp_business_account", "entry": [{"changes": [{"field": "messages", "value": {
        "metadata": {"phone_number_id": "1"},
        "messages": [{"from": WA_ID, "id": "wamid.C1", "timestamp": "1700000000", "type": "contacts", "contacts": [card]}]}}]}]}
    (item,) = parse_webhook("wa", json.dumps(doc).encode())
    text = item.inbound.text
    for value in ("Dana Scully", "Dr.", "+1 202 555 0100", "dana@example.org", "Acme Fund", "Private Placements",
                  "Insider Relations", "1 Main St", "Washington", "20001", "https://acme.example/offer", "1964-02-23"):
        assert value in text, value
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "p.yaml").write_text(
        "schema: relay-policy/v1\npolicy: {id: t, version: 1}\nrules:\n"
        "  - id: T-1\n    title: insider\n    severity: high\n    match: {keywords: [insider]}\n    action: quarantine\n"
        "    tests: [{text: insider, expect: quarantine}]\n"
        "  - id: T-2\n    title: email\n    severity: low\n    match: {detector: email}\n    action: flag\n"
        "    tests: [{text: a@b.org, expect: flag}]\n")
    verdict = load_policy_dir(policies).evaluate(EvalInput(direction="inbound", channel="wa", text=text, message_id="m"))
    assert verdict.action == "quarantine" and set(verdict.rules) == {"T-1", "T-2"}


async def until(probe: Callable[[], Awaitable[T | None]], what: str, timeout: float = 10.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def test_through_the_relay_an_edit_reaches_the_employee_and_a_bad_digest_reaches_review(
        tmp_path: Path, graph: FakeGraph) -> None:
    cfg = web_config(tmp_path / "data")
    cfg["channels"]["whatsapp"] = {
        "network": "whatsapp", "side": "client", "phone_number_id": graph.phone_number_id,
        "access_token": graph.access_token, "app_secret": graph.app_secret, "verify_token": "verify-me",
        "graph_url": graph.url, "timeout": 5}
    cfg["desks"]["advisors"]["clients"] += ["whatsapp"]
    async with running(cfg) as relay:
        url = f"{relay.base_url}/webhooks/whatsapp"
        desk = await desk_socket(relay.base_url, "alice")
        edit = {"from": WA_ID, "id": "wamid.EDIT1", "timestamp": str(int(time.time())), "type": "unsupported",
                "errors": [{"code": 131051, "title": "Message type unknown"}], "unsupported": {"type": "edit"}}
        doc = graph.notification(messages=[edit], contacts=[{"profile": {"name": "Kim"}, "wa_id": WA_ID}])
        assert await graph.post_webhook(url, doc) == (200, "ok")
        notice = await desk.wait_for(lambda f: f.get("type") == "notice" and "cannot be shown" in f.get("text", ""))
        assert "unsupported:edit" in notice["text"] and notice["conversation"].startswith("c-")
        rows = await relay.journal.fetchall("SELECT body_json FROM events WHERE kind = 'message.received'")
        (received,) = [json.loads(r["body_json"]) for r in rows]
        assert received["kind"] == "event" and received["notice"] == notice["text"]

        graph.add_media("SWAP", b"the real statement", "application/pdf", served=b"a substituted file")
        doc = graph.media_message(WA_ID, "document", "SWAP", "application/pdf", filename="statement.pdf")
        assert await graph.post_webhook(url, doc) == (200, "ok")

        async def queued() -> list[Any]:
            return list(await relay.journal.fetchall(
                "SELECT q.rules_json, m.attachments_json FROM review_queue q JOIN messages m ON m.id = q.message_id"))

        (row,) = await until(queued, "the review item")
        assert "RELAY-INTEGRITY" in {h["rule"] for h in json.loads(row["rules_json"])}
        (att,) = json.loads(row["attachments_json"])
        assert att["integrity"].startswith("sha256 mismatch") and att["sha256"] == hashlib.sha256(b"a substituted file").hexdigest()
        shown = await desk.wait_for(lambda f: f.get("type") == "message" and f.get("attachments"))
        assert shown["verdict"] == {"action": "flag", "rules": ["RELAY-INTEGRITY"]}
        await desk.close()

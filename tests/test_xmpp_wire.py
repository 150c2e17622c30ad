"""The XMPP adapter's pure parts: stanza parsing, platform ids, settings, backoff, bounded fetch."""

from __future__ import annotations

import random
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import AsyncIterator

import aiohttp
import pytest
import yaml
from aiohttp import web

import bots.xmpp
from bots.base import ChannelConfigError
from bots.xmpp import files
from bots.xmpp.link import backoff_delay
from bots.xmpp.settings import parse_settings
from relay.config import config_from_dict
from bots.base import Permanent
from bots.xmpp.stanzas import make_pid, parse_message, parse_slot, split_pid, xml_safe
from relay.model import Outgoing, Party
from tests.xmpp_support import make_ctx


def msg(inner: str, **attrs: str) -> ET.Element:
    attr = " ".join(f'{k}="{v}"' for k, v in {"type": "chat", "id": "x1", **attrs}.items())
    return ET.fromstring(f'<message xmlns="jabber:client" {attr}>{inner}</message>')


def test_plain_message_with_nick_delay_and_receipt_request() -> None:
    p = parse_message(msg('<body>hi</body><nick xmlns="http://jabber.org/protocol/nick">Zoe</nick>'
                          '<request xmlns="urn:xmpp:receipts"/><delay xmlns="urn:xmpp:delay" stamp="2024-01-02T03:04:05Z"/>'))
    assert (p.kind, p.id, p.body, p.nick, p.receipt_requested) == ("message", "x1", "hi", "Zoe", True)
    assert p.sent_at == 1704164645.0


def test_correction_retraction_receipt_marker_error_and_chatstate() -> None:
    edit = parse_message(msg('<body>fixed</body><replace xmlns="urn:xmpp:message-correct:0" id="a"/>'))
    assert (edit.kind, edit.body, edit.target_id) == ("edit", "fixed", "a")
    retract = parse_message(msg('<body>fallback</body><retract xmlns="urn:xmpp:message-retract:1" id="a"/>'))
    assert (retract.kind, retract.target_id) == ("delete", "a")
    old = parse_message(msg('<apply-to xmlns="urn:xmpp:fasten:0" id="b"><retract xmlns="urn:xmpp:message-retract:0"/>'
                            '</apply-to>'))
    assert (old.kind, old.target_id) == ("delete", "b")
    receipt = parse_message(msg('<received xmlns="urn:xmpp:receipts" id="r9"/>'))
    assert (receipt.kind, receipt.target_id) == ("receipt", "r9")
    marker = parse_message(msg('<displayed xmlns="urn:xmpp:chat-markers:0" id="r9"/>'))
    assert (marker.kind, marker.body, marker.target_id) == ("marker", "displayed", "r9")
    err = parse_message(msg('<error type="cancel"><service-unavailable xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/>'
                            '</error>', type="error"))
    assert (err.kind, err.error, err.target_id) == ("error", "service-unavailable", "x1")
    typing = parse_message(msg('<composing xmlns="http://jabber.org/protocol/chatstates"/>'))
    assert typing.kind == "ephemeral"
    unknown = parse_message(msg('<encrypted xmlns="eu.siacs.conversations.axolotl"/>'))
    assert unknown.kind == "event"


def test_oob_url_equal_to_body_becomes_a_file_without_text() -> None:
    url = "http://127.0.0.1:1/share/x/report.pdf"
    p = parse_message(msg(f'<body>{url}</body><x xmlns="jabber:x:oob"><url>{url}</url></x>'))
    assert (p.kind, p.body, p.urls) == ("message", "", (url,))
    captioned = parse_message(msg(f'<body>see this</body><x xmlns="jabber:x:oob"><url>{url}</url></x>'))
    assert captioned.body == "see this"


def test_reply_reference_is_read() -> None:
    p = parse_message(msg('<body>yes</body><reply xmlns="urn:xmpp:reply:0" to="c-1@clients.x/r" id="relay-m-9"/>'))
    assert (p.kind, p.reply_to_id, p.reply_to_jid) == ("message", "relay-m-9", "c-1@clients.x/r")


def test_origin_id_when_the_stanza_has_no_id() -> None:
    el = ET.fromstring('<message xmlns="jabber:client"><body>x</body><origin-id xmlns="urn:xmpp:sid:0" id="o1"/>'
                       '</message>')
    assert parse_message(el).id == "o1"


@pytest.mark.parametrize("bare,sid", [("alice@example.org", "abc"), ("c-1@clients.example.org", "a:b:c"),
                                      ("user@[::1]", "id:7"), ("example.org", "x")])
def test_platform_id_round_trip(bare: str, sid: str) -> None:
    assert split_pid(make_pid(bare, sid)) == (bare, sid)


def test_slot_keeps_only_allowed_headers() -> None:
    iq = ET.fromstring(
        '<iq xmlns="jabber:client" type="result"><slot xmlns="urn:xmpp:http:upload:0">'
        '<put url="http://h/put"><header name="Authorization">Bearer t</header><header name="X-Evil">1</header></put>'
        '<get url="http://h/get"/></slot></iq>')
    slot = parse_slot(iq)
    assert (slot.put_url, slot.get_url, slot.headers) == ("http://h/put", "http://h/get", {"Authorization": "Bearer t"})


def test_backoff_is_capped_exponential_with_jitter() -> None:
    rng = random.Random(7)
    delays = [backoff_delay(n, 0.5, 8.0, rng) for n in range(1, 12)]
    for n, d in enumerate(delays, start=1):
        ceiling = min(8.0, 0.5 * 2 ** (n - 1))
        assert ceiling / 2 <= d <= ceiling
    assert max(delays) <= 8.0
    assert len({round(d, 6) for d in delays}) == len(delays)


def test_settings_defaults_and_errors(tmp_path: Path) -> None:
    s = parse_settings("x", {"jid": "clients.example.org", "secret": "s"}, "staff")
    assert (s.mode, s.port, s.host, s.domain, s.use_tls) == ("component", 5347, "clients.example.org", "example.org", False)
    c = parse_settings("y", {"jid": "desk@example.org", "password": "p"}, "client")
    assert (c.mode, c.port, c.domain, c.use_tls) == ("client", 5222, "example.org", True)
    cases = [
        ({"jid": "clients.example.org"}, "staff", "secret is required"),
        ({"jid": "desk@example.org", "secret": "s"}, "staff", "a component jid is a bare domain"),
        ({"jid": "example.org", "password": "p"}, "client", "a client jid is an account"),
        ({"jid": "x.org", "secret": "s", "mode": "component"}, "client", "side 'client' needs mode"),
        ({"jid": "x.org", "secret": "s", "bogus": 1}, "staff", "unknown xmpp setting(s) bogus"),
        ({"jid": "x.org", "secret": "s", "port": "abc"}, "staff", "port must be a number"),
        ({"jid": "x.org", "secret": "s", "use_tls": "no"}, "staff", "use_tls must be true or false"),
    ]
    for block, side, message in cases:
        with pytest.raises(ChannelConfigError, match="channel t: " + message.replace("(", r"\(").replace(")", r"\)")):
            parse_settings("t", block, side)
    with pytest.raises(ChannelConfigError, match="secret is required"):
        bots.xmpp.create("t", {"jid": "clients.example.org"}, make_ctx("t", "staff", str(tmp_path)))


@pytest.fixture
async def file_server() -> AsyncIterator[tuple[str, dict[str, int]]]:
    sent: dict[str, int] = {}

    async def chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        sent["chunks"] = 0
        try:
            for _ in range(200):
                await resp.write(b"x" * 65536)
                sent["chunks"] += 1
        except (ConnectionResetError, RuntimeError):
            pass
        return resp

    async def declared(request: web.Request) -> web.Response:
        return web.Response(body=b"y" * 10_000, content_type="image/png")

    async def missing(request: web.Request) -> web.Response:
        return web.Response(status=404)

    async def bounce(request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["to"])

    async def hit(request: web.Request) -> web.Response:
        sent["hits"] = sent.get("hits", 0) + 1
        return web.Response(body=b"secret")

    app = web.Application()
    app.router.add_get("/stream.bin", chunked)
    app.router.add_get("/pic.png", declared)
    app.router.add_get("/gone.txt", missing)
    app.router.add_get("/bounce", bounce)
    app.router.add_get("/internal.txt", hit)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}", sent
    await runner.cleanup()


async def test_fetch_checks_declared_and_streamed_size(file_server: tuple[str, dict[str, int]]) -> None:
    base, sent = file_server
    allowed = {files.url_host(base), "127.0.0.1:1"}
    async with aiohttp.ClientSession() as session:
        ok = await files.fetch(session, f"{base}/pic.png", 20_000, 5, allowed)
        assert (ok.name, ok.mime, ok.size, ok.refused) == ("pic.png", "image/png", 10_000, "")
        declared = await files.fetch(session, f"{base}/pic.png", 5_000, 5, allowed)
        assert declared.data == b"" and declared.refused == "too large: 10000 bytes > limit 5000"
        streamed = await files.fetch(session, f"{base}/stream.bin", 200_000, 5, allowed)
        assert streamed.data == b"" and "too large" in streamed.refused
        assert sent["chunks"] < 200
        gone = await files.fetch(session, f"{base}/gone.txt", 1000, 5, allowed)
        assert gone.refused == "fetch failed: HTTP 404"
        scheme = await files.fetch(session, "file:///etc/passwd", 1000, 5, allowed)
        assert scheme.refused == "unsupported URL scheme"
        closed = await files.fetch(session, "http://127.0.0.1:1/x", 1000, 5, allowed)
        assert closed.refused.startswith("fetch failed:")


async def test_fetch_refuses_hosts_and_redirects_outside_the_allowlist(
        file_server: tuple[str, dict[str, int]]) -> None:
    base, sent = file_server
    internal = f"{base}/internal.txt"
    async with aiohttp.ClientSession() as session:
        denied = await files.fetch(session, internal, 1000, 5, {"files.example.org"})
        assert denied.refused.startswith(f"host not allowed: {files.url_host(base)}")
        assert denied.data == b"" and denied.platform_ref == internal
        assert denied.refused == f"host not allowed: {files.url_host(base)}"
        port = int(files.url_host(base).rsplit(":", 1)[1])
        other = f"http://localhost:{port}/internal.txt"
        hop = await files.fetch(session, f"{base}/bounce?to={other}", 1000, 5, {files.url_host(base)})
        assert hop.refused == f"redirect refused: host not allowed: localhost:{port}"
        assert sent.get("hits", 0) == 0
        same = await files.fetch(session, f"{base}/bounce?to=/internal.txt", 1000, 5, {files.url_host(base)})
        assert same.refused == "" and same.data == b"secret" and sent["hits"] == 1


def test_fetch_host_entries_and_matching() -> None:
    assert files.host_entry(" Files.Example.org ") == "files.example.org"
    assert files.host_entry("files.example.org:8443") == "files.example.org:8443"
    assert files.host_entry("[::1]:5280") == "[::1]:5280"
    for bad in ("", "http://x.org/", "x.org/path", "user@x.org", "x.org:http"):
        with pytest.raises(ValueError):
            files.host_entry(bad)
    assert files.host_allowed("https://files.example.org/a", {"files.example.org"})
    assert files.host_allowed("http://files.example.org/a", {"files.example.org"})
    assert not files.host_allowed("https://files.example.org:8443/a", {"files.example.org"})
    assert files.host_allowed("https://files.example.org:8443/a", {"files.example.org:8443"})
    assert not files.host_allowed("https://files.example.org/a", {"files.example.org:8443"})
    assert files.host_allowed("http://[::1]:5280/a", {"[::1]:5280"})
    assert not files.host_allowed("http://evil.example.org/a", {"files.example.org"})


def test_fetch_hosts_and_stream_management_settings_are_validated() -> None:
    base = {"jid": "desk@example.org", "password": "pw"}
    assert parse_settings("t", base, "client").fetch_hosts is None
    assert parse_settings("t", {**base, "fetch_hosts": []}, "client").fetch_hosts == ()
    assert parse_settings("t", {**base, "fetch_hosts": ["Up.Example.org", "up.example.org:5281"]},
                          "client").fetch_hosts == ("up.example.org", "up.example.org:5281")
    assert parse_settings("t", base, "client").stream_management is True
    assert parse_settings("t", {**base, "stream_management": False}, "client").stream_management is False
    with pytest.raises(ChannelConfigError, match="stream_management must be true or false"):
        parse_settings("t", {**base, "stream_management": "yes"}, "client")
    with pytest.raises(ChannelConfigError, match="fetch_hosts must be a list"):
        parse_settings("t", {**base, "fetch_hosts": "up.example.org"}, "client")
    with pytest.raises(ChannelConfigError, match="fetch_hosts: 'http://up/' is not a host"):
        parse_settings("t", {**base, "fetch_hosts": ["http://up/"]}, "client")
    assert parse_settings("t", base, "client").send_window == 16
    assert parse_settings("t", {**base, "send_window": 1}, "client").send_window == 1
    for bad in (0, 257, "8", True, 2.5):
        with pytest.raises(ChannelConfigError, match="send_window must be a whole number from 1 to 256"):
            parse_settings("t", {**base, "send_window": bad}, "client")


def test_example_config_block_uncommented_is_valid(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[1]
    lines = []
    in_xmpp = False
    for line in (root / "config.example.yaml").read_text().splitlines():
        if line.startswith("# --- "):
            in_xmpp = line.startswith("# --- xmpp ---")
        elif in_xmpp and line.startswith(("  # xmpp-clients:", "  # xmpp-staff:", "  #   ")):
            line = "  " + line[4:]
        lines.append(line)
    data = yaml.safe_load("\n".join(lines))
    data["desks"]["advisors"]["clients"].append("xmpp-clients")
    data["employees"]["carol"] = {"name": "Carol", "staff": {"channel": "xmpp-staff", "address": "carol@example.org"}}
    env = {"RELAY_XMPP_DESK_PASSWORD": "pw", "RELAY_XMPP_COMPONENT_SECRET": "sec"}
    cfg = config_from_dict(data, base=root, env=env)
    staff = cfg.channels["xmpp-staff"]
    channel = bots.xmpp.create("xmpp-staff", staff.settings, make_ctx("xmpp-staff", staff.side, str(tmp_path)))
    assert (channel.settings.mode, channel.settings.secret, channel.settings.upload_service) == (
        "component", "sec", "upload.example.org")
    clients = cfg.channels["xmpp-clients"]
    desk = bots.xmpp.create("xmpp-clients", clients.settings, make_ctx("xmpp-clients", clients.side, str(tmp_path)))
    assert (desk.settings.mode, desk.settings.jid, desk.settings.secret) == ("client", "desk@example.org", "pw")


def test_text_xml_cannot_carry_is_replaced_not_sent_raw() -> None:
    assert xml_safe("bell\x07 nul\x00 tab\t nl\n ok é 中") == "bell\ufffd nul\ufffd tab\t nl\n ok é 中"


async def test_overlong_message_is_permanent_before_touching_the_stream(tmp_path: Path) -> None:
    channel = bots.xmpp.create("t", {"jid": "clients.example.org", "secret": "s"}, make_ctx("t", "staff", str(tmp_path)))
    out = Outgoing(conversation="c-1", to=Party("t", "alice@example.org"), text="x" * 300_000, message_id="m-1")
    with pytest.raises(Permanent, match="too long for XMPP"):
        await channel.send(out)

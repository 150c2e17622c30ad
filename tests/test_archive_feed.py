"""The archive feed against a real SMTP server (aiosmtpd on loopback, STARTTLS and AUTH): every
message of both directions arrives as the export's EML, in order per conversation, through a
server stop and restart; a message whose reply was lost arrives twice with one Message-ID."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from relay.app import RelayApp
from relay.evidence.archive import ArchiveError, settings_of
from tests.compliance_support import memory_compliance_config, until, write_policies


@pytest.fixture(scope="session")
def smtp_cert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("smtp-tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", "key.pem", "-out", "cert.pem", "-subj", "/CN=127.0.0.1", "-days", "2",
                    "-addext", "subjectAltName=IP:127.0.0.1"], cwd=d, check=True, capture_output=True)
    return d


class Archive:
    """What the archive received: the raw messages, and a switch to lose one reply."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.lose_reply_of: str | None = None
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.messages.append(envelope.original_content or envelope.content)
        text = (envelope.original_content or envelope.content).decode(errors="replace")
        if self.lose_reply_of and self.lose_reply_of in text:
            self.lose_reply_of = None
            server.transport.close()   # kept, but the client never hears "250"
        return "250 2.0.0 Ok: queued as test"

    def parsed(self) -> list[email.message.EmailMessage]:
        with self.lock:
            return [email.message_from_bytes(m, policy=email.policy.default) for m in self.messages]  # type: ignore[misc]


def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (b"relay", b"s3cret")
    return AuthResult(success=ok)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(handler: Archive, port: int, cert: Path) -> Controller:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert / "cert.pem", cert / "key.pem")
    c = Controller(handler, hostname="127.0.0.1", port=port, tls_context=ctx, require_starttls=True,
                   authenticator=authenticate, auth_require_tls=True)
    c.start()
    return c


@pytest.fixture
def archive(smtp_cert: Path) -> Iterator[tuple[Archive, int]]:
    handler, port = Archive(), free_port()
    yield handler, port


async def sent_events(app: RelayApp) -> list[dict[str, Any]]:
    rows = await app.journal.fetchall("SELECT body_json FROM events WHERE kind='archive.sent' ORDER BY seq")
    return [json.loads(r["body_json"]) for r in rows]


async def wait_for(pred: Any, timeout: float = 30.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if await pred():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached")


async def test_every_message_arrives_through_a_restart_in_order_and_duplicates_share_message_id(
        tmp_path: Path, smtp_cert: Path, archive: tuple[Archive, int]) -> None:
    handler, port = archive
    server = start_server(handler, port, smtp_cert)
    cfg = memory_compliance_config(tmp_path / "data", write_policies(tmp_path / "policies"), archive={
        "host": "127.0.0.1", "port": port, "starttls": True, "username": "relay", "password": "s3cret",
        "ca_file": str(smtp_cert / "cert.pem"), "from": "relay@example.com", "to": "journal@archive.example.com",
        "every": 0.05, "settle": 0.5, "base_delay": 0.05, "max_delay": 0.3, "timeout": 5})
    app = await RelayApp.start(cfg)
    try:
        clients, staff = app.channels["clients"], app.channels["staff"]
        ids: list[str] = []
        r = await clients.inject("u1", "hello, a statement please", "u1:0", display="Una")
        ids.append(r.message_id)
        await until(lambda: any(o.to.user == "ann" for o in staff.sent))
        conv = r.conversation
        ids.append((await staff.inject("ann", "here it is, guaranteed", "ann:0", chat=conv)).message_id)
        ids.append((await clients.inject("u2", "hi from u2", "u2:0", display="Vic")).message_id)
        await wait_for(lambda: _count(app, 3))
        server.stop()
        for i in range(1, 4):
            ids.append((await clients.inject("u1", f"while the archive is down {i}", f"u1:{i}", display="Una")).message_id)
        await wait_for(lambda: _failed(app))
        assert app.health.checks["archive"].ok is False
        await until(lambda: any("[relay archive]" in o.text for o in staff.sent), timeout=10)
        handler.lose_reply_of = ids[3]
        server = start_server(handler, port, smtp_cert)
        ids.append((await clients.inject("u2", "after the restart", "u2:1", display="Vic")).message_id)
        await wait_for(lambda: _count(app, len(ids)))
        got = handler.parsed()
        by_id: dict[str, list[Any]] = {}
        for m in got:
            by_id.setdefault(m["X-Relay-Message-Id"], []).append(m)
        assert set(by_id) == set(ids)                               # none lost
        assert len(by_id[ids[3]]) == 2                               # the lost reply: sent again …
        assert {m["Message-ID"] for m in by_id[ids[3]]} == {f"<{ids[3]}@relay.invalid>"}  # … with one Message-ID
        assert all(len(v) == 1 for k, v in by_id.items() if k != ids[3])
        reply = by_id[ids[1]][0]
        assert reply["X-Relay-Direction"] == "outbound" and reply["X-Relay-Verdict"] == "flag"
        assert reply["X-Relay-Rules"] == "F-001"
        seqs: dict[str, list[int]] = {}
        for m in got:
            seqs.setdefault(m["X-Relay-Conversation"], []).append(int(m["X-Relay-Journal-Seq"]))
        for conv_seqs in seqs.values():                              # in order per conversation
            firsts = list(dict.fromkeys(conv_seqs))
            assert firsts == sorted(firsts)
        events = await sent_events(app)
        assert all(e["reply"].startswith("2.0.0 Ok") or "Ok" in e["reply"] for e in events)
        assert [e["message_id"] for e in events] == ids
        assert app.health.checks["archive"].ok
    finally:
        await app.stop()
        server.stop()


async def _count(app: RelayApp, n: int) -> bool:
    return len(await sent_events(app)) >= n


async def _failed(app: RelayApp) -> bool:
    return bool(await app.journal.fetchall("SELECT 1 FROM events WHERE kind='archive.failed'"))


async def test_wrong_password_is_a_journaled_failure_not_a_send(
        tmp_path: Path, smtp_cert: Path, archive: tuple[Archive, int]) -> None:
    handler, port = archive
    server = start_server(handler, port, smtp_cert)
    cfg = memory_compliance_config(tmp_path / "data", write_policies(tmp_path / "policies"), archive={
        "host": "127.0.0.1", "port": port, "username": "relay", "password": "wrong", "ca_file": str(smtp_cert / "cert.pem"),
        "to": "journal@archive.example.com", "every": 0.05, "settle": 0.2, "base_delay": 0.05, "max_delay": 0.2,
        "timeout": 3})
    app = await RelayApp.start(cfg)
    try:
        await app.channels["clients"].inject("u1", "hello", "u1:0", display="Una")
        await wait_for(lambda: _failed(app))
        rows = await app.journal.fetchall("SELECT body_json FROM events WHERE kind='archive.failed'")
        # aiosmtpd answers a wrong AUTH so that aiosmtplib's login ends in an error or a read timeout
        assert json.loads(rows[0]["body_json"])["error"].startswith("SMTP")
        assert handler.messages == [] and await sent_events(app) == []
    finally:
        await app.stop()
        server.stop()


def test_settings_need_host_and_to() -> None:
    assert settings_of({}, Path(".")) is None
    with pytest.raises(ArchiveError, match="needs host and to"):
        settings_of({"archive": {"host": "smtp.example.com"}}, Path("."))
    s = settings_of({"archive": {"host": "h", "to": ["a@x", "b@x"], "ca_file": "ca.pem"}}, Path("/etc/relay"))
    assert s is not None and s.to == ("a@x", "b@x") and s.ca_file == Path("/etc/relay/ca.pem") and s.starttls

"""Attachment uploads: streamed with the size limit checked per chunk, named by messages, served back."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import AsyncIterator

import aiohttp
import pytest

from bots.webchat.uploads import clean_name
from tests.webchat_support import Harness, next_frame, start_harness

LIMIT = 64 * 1024


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    harness = await start_harness(tmp_path, max_bytes=LIMIT)
    yield harness
    await harness.close()


async def upload(s: aiohttp.ClientSession, url: str, data: bytes, name: str = "note.txt",
                 mime: str = "text/plain") -> tuple[int, dict]:
    form = aiohttp.FormData()
    form.add_field("file", data, filename=name, content_type=mime)
    async with s.post(url, data=form) as r:
        return r.status, await r.json()


async def test_upload_then_message_carries_the_bytes(h: Harness) -> None:
    s = h.session()
    data = b"account statement\n" * 100
    status, meta = await upload(s, h.base + "/chat/upload?visitor=v1", data, "statement.txt")
    assert status == 200
    assert meta["name"] == "statement.txt" and meta["mime"] == "text/plain" and meta["size"] == len(data)
    assert meta["sha256"] == hashlib.sha256(data).hexdigest()
    assert list((h.data_dir / "uploads" / "pending").glob("*.bin"))
    ws = await h.visitor("v1")
    frame = {"type": "message", "id": "f1", "text": "see attached", "attachments": [meta["upload"]]}
    await ws.send_json(frame)
    assert await next_frame(ws) == {"type": "ack", "id": "f1"}
    [att] = h.recorder.inbounds[0].attachments
    assert (att.name, att.mime, att.size, att.sha256, att.data) == (
        "statement.txt", "text/plain", len(data), meta["sha256"], data)
    assert att.platform_ref == meta["upload"]
    assert not list((h.data_dir / "uploads" / "pending").glob("*.bin"))
    await ws.send_json(frame)
    assert await next_frame(ws) == {"type": "ack", "id": "f1"}
    assert h.recorder.inbounds[1].attachments[0].data == data
    async with s.get(h.base + f"/chat/file/{meta['sha256']}?visitor=v1") as r:
        assert r.status == 200 and await r.read() == data


async def test_upload_of_another_visitor_is_unknown(h: Harness) -> None:
    s = h.session()
    _, meta = await upload(s, h.base + "/chat/upload?visitor=mallory", b"secret")
    ws = await h.visitor("v2")
    await ws.send_json({"type": "message", "id": "f2", "text": "x", "attachments": [meta["upload"]]})
    reply = await next_frame(ws)
    assert reply["type"] == "error" and "unknown upload" in reply["error"] and reply["id"] == "f2"
    assert h.recorder.inbounds == []


async def test_failed_deliver_keeps_the_upload_for_the_retry(h: Harness) -> None:
    s = h.session()
    _, meta = await upload(s, h.base + "/chat/upload?visitor=v3", b"payload")
    ws = await h.visitor("v3")
    frame = {"type": "message", "id": "f3", "text": "", "attachments": [meta["upload"]]}
    h.recorder.fail = RuntimeError("journal down")
    await ws.send_json(frame)
    assert (await next_frame(ws))["error"] == "not accepted, please retry"
    h.recorder.fail = None
    await ws.send_json(frame)
    assert await next_frame(ws) == {"type": "ack", "id": "f3"}
    assert h.recorder.inbounds[0].attachments[0].data == b"payload"


async def test_over_limit_is_refused_while_streaming(h: Harness) -> None:
    """A chunked upload far over the limit gets 413 long before the client has sent it all."""
    port = int(h.base.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (f"POST /chat/upload?visitor=v4 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Content-Type: multipart/form-data; boundary=BOUNDARY\r\nTransfer-Encoding: chunked\r\n\r\n")
    writer.write(head.encode())

    def chunk(data: bytes) -> bytes:
        return f"{len(data):x}\r\n".encode() + data + b"\r\n"

    writer.write(chunk(b'--BOUNDARY\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n'
                       b"Content-Type: application/octet-stream\r\n\r\n"))
    total = 64 * 1024 * 1024
    piece = b"x" * (16 * 1024)
    sent = 0
    response = asyncio.ensure_future(reader.readuntil(b"\r\n\r\n"))
    try:
        while sent < total and not response.done():
            writer.write(chunk(piece))
            sent += len(piece)
            await writer.drain()
            await asyncio.sleep(0)
    except ConnectionError:
        pass
    head_bytes = await asyncio.wait_for(response, 5)
    assert sent < total // 4, f"server answered only after {sent} bytes"
    status_line, *headers = head_bytes.decode().split("\r\n")
    assert status_line.split()[1] == "413"
    assert any(line.lower() == "connection: close" for line in headers)
    length = next(int(line.split(":")[1]) for line in headers if line.lower().startswith("content-length"))
    body = json.loads(await reader.readexactly(length))
    assert body == {"error": f"file too large: the limit is {LIMIT} bytes"}
    assert await server_stopped_reading(writer, chunk(piece)), "server kept reading the refused body"
    writer.close()
    pending = h.data_dir / "uploads" / "pending"
    assert not list(pending.glob("*.bin")) and not list(pending.glob("*.part"))


async def server_stopped_reading(writer: asyncio.StreamWriter, data: bytes) -> bool:
    """True when writes stall (or the peer closes) well before 64 MiB more: nobody reads them."""
    extra = 0
    try:
        while extra < 64 * 1024 * 1024:
            writer.write(data)
            extra += len(data)
            await asyncio.wait_for(writer.drain(), 1.0)
    except (asyncio.TimeoutError, ConnectionError):
        return True
    return False


async def test_over_limit_with_aiohttp_streaming_client(h: Harness) -> None:
    """The same through aiohttp's client with a body generator that counts what it produced."""
    produced = 0
    total = 64 * 1024 * 1024

    async def body() -> AsyncIterator[bytes]:
        nonlocal produced
        yield (b'--B\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n'
               b"Content-Type: application/octet-stream\r\n\r\n")
        while produced < total:
            produced += 64 * 1024
            yield b"y" * (64 * 1024)
            await asyncio.sleep(0)

    s = h.session()
    async with s.post(h.base + "/chat/upload?visitor=v5", data=body(),
                      headers={"Content-Type": "multipart/form-data; boundary=B"}) as r:
        assert r.status == 413
        assert "file too large" in (await r.json())["error"]
        at_response = produced
    assert at_response < total // 4, f"answered only after {at_response} bytes"


async def test_declared_oversize_body_is_refused_up_front(h: Harness) -> None:
    port = int(h.base.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write((f"POST /chat/upload?visitor=v6 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  f"Content-Type: multipart/form-data; boundary=B\r\nContent-Length: {10 * LIMIT}\r\n\r\n").encode())
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.split()[1] == b"413"
    writer.close()


async def test_exactly_the_limit_is_accepted(h: Harness) -> None:
    status, meta = await upload(h.session(), h.base + "/chat/upload?visitor=v7", b"z" * LIMIT, "max.bin",
                                "application/octet-stream")
    assert status == 200 and meta["size"] == LIMIT
    status, meta = await upload(h.session(), h.base + "/chat/upload?visitor=v7", b"z" * (LIMIT + 1))
    assert status == 413 and "limit" in meta["error"]


async def test_bad_upload_requests_get_clear_errors(h: Harness) -> None:
    s = h.session()
    async with s.post(h.base + "/chat/upload?visitor=v8", data=b"raw bytes") as r:
        assert r.status == 400 and "multipart" in (await r.json())["error"]
    form = aiohttp.FormData()
    form.add_field("other", "value")
    async with s.post(h.base + "/chat/upload?visitor=v8", data=form) as r:
        assert r.status == 400 and "`file`" in (await r.json())["error"]
    status, meta = await upload(s, h.base + "/chat/upload?visitor=v8", b"")
    assert status == 400 and "empty" in meta["error"]
    async with s.post(h.base + "/chat/upload?visitor=no:colons", data=b"") as r:
        assert r.status == 400


async def test_file_names_are_cleaned(h: Harness) -> None:
    """Browsers send the raw UTF-8 name in the part header; only a safe base name is kept."""
    body = ('--B\r\nContent-Disposition: form-data; name="file"; filename="../../etc/\u202eevil.svg"\r\n'
            "Content-Type: image/svg+xml\r\n\r\n<svg/>\r\n--B--\r\n").encode()
    s = h.session()
    async with s.post(h.base + "/chat/upload?visitor=v9", data=body,
                      headers={"Content-Type": "multipart/form-data; boundary=B"}) as r:
        meta = await r.json()
    assert r.status == 200 and meta["name"] == "evil.svg" and meta["mime"] == "image/svg+xml"
    assert clean_name("C:\\Users\\x\\report.pdf") == "report.pdf"
    assert clean_name("..") == "file" and clean_name(None) == "file"


async def test_desk_upload_needs_login_and_reply_carries_file(h: Harness) -> None:
    anon = h.session()
    form = aiohttp.FormData()
    form.add_field("file", b"x", filename="a.txt")
    async with anon.post(h.base + "/desk/upload", data=form) as r:
        assert r.status == 401
    s = await h.login()
    status, meta = await upload(s, h.base + "/desk/upload", b"%PDF-1.7 terms", "terms.pdf", "application/pdf")
    assert status == 200
    ws = await s.ws_connect(h.ws_url("/desk/ws"))
    await ws.send_json({"type": "reply", "conversation": "c-1", "id": "r1", "text": "", "attachments": [meta["upload"]]})
    assert await next_frame(ws) == {"type": "ack", "id": "r1"}
    [att] = h.recorder.inbounds[0].attachments
    assert att.data == b"%PDF-1.7 terms" and att.name == "terms.pdf"
    async with s.get(h.base + f"/desk/file/{meta['sha256']}") as r:
        assert r.status == 200 and await r.read() == b"%PDF-1.7 terms"
    bob = await h.login("bob", "bob-secret")
    async with bob.get(h.base + f"/desk/file/{meta['sha256']}") as r:
        assert r.status == 404
    async with anon.get(h.base + f"/desk/file/{meta['sha256']}") as r:
        assert r.status == 401

"""Hostile input to the web chat and desk: each bad request gets a clear 4xx or error frame,
and the socket or server goes on serving the same sender and everyone else."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import AsyncIterator

import aiohttp
import pytest

from tests.webchat_support import Harness, frame_of_type, next_frame, start_harness


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    harness = await start_harness(tmp_path, max_bytes=64 * 1024)
    yield harness
    await harness.close()


async def raw_post(h: Harness, path: str, content_type: str, body: bytes) -> tuple[int, bytes]:
    """A POST with a body exactly as given (aiohttp's client would not build a broken one)."""
    port = int(h.base.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    writer.write(head.encode() + body)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    status = int(answer.split(b" ", 2)[1])
    return status, answer.split(b"\r\n\r\n", 1)[1]


async def test_deep_nesting_gets_an_error_frame_and_the_socket_stays_open(h: Harness) -> None:
    ws = await h.visitor("deep1")
    other = await h.visitor("other1")
    await ws.send_str('{"type":"message","id":"a1","text":' + "[" * 100_000 + "]" * 100_000 + "}")
    reply = await frame_of_type(ws, "error")
    assert "nested" in reply["error"]
    await ws.send_json({"type": "message", "id": "a2", "text": "still here"})
    assert await frame_of_type(ws, "ack") == {"type": "ack", "id": "a2"}
    await other.send_json({"type": "message", "id": "b1", "text": "hello"})
    assert await frame_of_type(other, "ack") == {"type": "ack", "id": "b1"}
    assert [i.text for i in h.recorder.inbounds] == ["still here", "hello"]


async def test_deep_nesting_on_the_desk_socket(h: Harness) -> None:
    s = await h.login()
    ws = await s.ws_connect(h.ws_url("/desk/ws"))
    await ws.send_str("[" * 100_000 + "]" * 100_000)
    reply = await frame_of_type(ws, "error")
    assert "nested" in reply["error"]
    await ws.send_json({"type": "reply", "id": "r1", "conversation": "c-1", "text": "ok"})
    assert await frame_of_type(ws, "ack") == {"type": "ack", "id": "r1"}


async def test_broken_multipart_upload_is_400(h: Harness) -> None:
    bodies = [
        b"--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n\r\nabc",
        b"--B\r\nno headers end here",
        b"garbage without any boundary",
    ]
    for body in bodies:
        status, answer = await raw_post(h, "/chat/upload?visitor=v1", "multipart/form-data; boundary=B", body)
        assert 400 <= status < 500, (body, status, answer)
        assert b"multipart" in answer or b"file" in answer, answer
    status, _ = await raw_post(h, "/chat/upload?visitor=v1", "multipart/form-data", b"--B\r\n\r\n")
    assert status == 400


async def test_nul_in_an_upload_file_name(h: Harness) -> None:
    body = (b"--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"evil\x00.txt\"\r\n"
            b"Content-Type: text/plain\r\n\r\nhello\r\n--B--\r\n")
    status, answer = await raw_post(h, "/chat/upload?visitor=v1", "multipart/form-data; boundary=B", body)
    assert 200 <= status < 500, (status, answer)
    body = (b"--B\r\nContent-Disposition: form-data; name=\"file\"; filename*=UTF-8''evil%00.txt\r\n"
            b"Content-Type: text/plain\r\n\r\nhello\r\n--B--\r\n")
    status, answer = await raw_post(h, "/chat/upload?visitor=v1", "multipart/form-data; boundary=B", body)
    assert 200 <= status < 500, (status, answer)
    if status == 200:
        assert b"\\u0000" not in answer and b"\x00" not in answer
    async with h.session().post(h.base + "/chat/upload?visitor=v1", data=_form(b"fine")) as r:
        assert r.status == 200


async def test_broken_login_form_is_400(h: Harness) -> None:
    status, answer = await raw_post(h, "/desk/login", "multipart/form-data; boundary=B",
                                    b"--B\r\nContent-Disposition: form-data; name=\"employee\"\r\n\r\nalice")
    assert 400 <= status < 500, (status, answer)
    await h.login()


def _form(data: bytes) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("file", data, filename="ok.txt", content_type="text/plain")
    return form


async def test_error_frames_say_whether_a_retry_can_help(h: Harness) -> None:
    ws = await h.visitor("retry1")
    await ws.send_json({"type": "message", "id": "p1", "text": "x" * 70_000})
    refused = await frame_of_type(ws, "error")
    assert refused["id"] == "p1" and refused["retry"] is False
    h.recorder.fail = RuntimeError("journal down")
    await ws.send_json({"type": "message", "id": "t1", "text": "hello"})
    transient = await frame_of_type(ws, "error")
    assert transient == {"type": "error", "id": "t1", "error": "not accepted, please retry", "retry": True}

"""Webhook mode: Telegram posts updates to the shared aiohttp app; the answer waits for deliver."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import pytest
from aiohttp import web

from bots.telegram import TelegramChannel, create
from fake_telegram import SECRET_HEADER, FakeTelegram
from telegram_support import CLIENT_TOKEN, MemoryState, Recorder, eventually, make_ctx

ANN = FakeTelegram.user(4242, "Ann", "Lee")
SECRET = "s3cret-Token_1"
PATH = "/telegram/telegram-clients"


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    server = FakeTelegram()
    await server.start()
    server.add_bot(CLIENT_TOKEN, "relay_client_bot")
    yield server
    await server.stop()


@asynccontextmanager
async def hooked(fake: FakeTelegram, recorder: Recorder) -> AsyncIterator[tuple[TelegramChannel, str]]:
    app = web.Application()
    ctx = make_ctx("telegram-clients", "client", MemoryState(), app=app)
    settings = {"token": CLIENT_TOKEN, "side": "client", "mode": "webhook", "webhook_secret": SECRET,
                "base_url": fake.base_url, "base_file_url": fake.base_file_url, "album_window": 0.3}
    channel = create("telegram-clients", settings, ctx)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # noqa: SLF001
    ctx.public_url = f"http://127.0.0.1:{port}"
    await channel.start(recorder)
    try:
        await eventually(lambda: fake.bots[CLIENT_TOKEN].webhook_url)
        yield channel, ctx.public_url + PATH
    finally:
        await channel.stop()
        await runner.cleanup()


async def test_webhook_is_registered_and_delivers(fake: FakeTelegram) -> None:
    rec = Recorder()
    async with hooked(fake, rec) as (_, url):
        assert fake.bots[CLIENT_TOKEN].webhook_url == url
        assert fake.bots[CLIENT_TOKEN].webhook_secret == SECRET
        fake.user_message(CLIENT_TOKEN, ANN, text="via webhook")
        [got] = await rec.wait_for(1)
    assert got.text == "via webhook" and got.chat == "4242"
    assert fake.called("getUpdates") == []


async def test_wrong_or_missing_secret_is_401_and_nothing_delivered(fake: FakeTelegram) -> None:
    rec = Recorder()
    update = {"update_id": 5, "message": {"message_id": 1, "date": 1, "chat": {"id": 4242, "type": "private"},
                                          "from": ANN, "text": "forged"}}
    async with hooked(fake, rec) as (_, url):
        async with aiohttp.ClientSession() as session:
            for headers in ({SECRET_HEADER: "wrong"}, {}):
                async with session.post(url, json=update, headers=headers) as resp:
                    assert resp.status == 401
            async with session.post(url, data=b"not json", headers={SECRET_HEADER: SECRET}) as resp:
                assert resp.status == 400
    assert rec.calls == 0 and rec.inbounds == []


async def test_failed_deliver_answers_500_and_telegram_retries(fake: FakeTelegram) -> None:
    rec = Recorder()
    rec.fail_next = 1
    async with hooked(fake, rec):
        fake.user_message(CLIENT_TOKEN, ANN, text="retry me")
        [got] = await rec.wait_for(1)
    assert got.text == "retry me"
    statuses = [status for _, status in fake.bots[CLIENT_TOKEN].webhook_posts]
    assert statuses == [500, 200]


async def test_duplicate_webhook_posts_are_harmless(fake: FakeTelegram) -> None:
    rec = Recorder()
    fake.duplicate_webhooks = True
    async with hooked(fake, rec):
        fake.user_message(CLIENT_TOKEN, ANN, text="once")
        await rec.wait_for(1)
        await eventually(lambda: len(fake.bots[CLIENT_TOKEN].webhook_posts) == 2)
    assert rec.calls == 2 and [i.text for i in rec.inbounds] == ["once"]


async def test_album_over_webhook_is_one_message(fake: FakeTelegram) -> None:
    rec = Recorder()
    async with hooked(fake, rec):
        for i in range(3):
            fake.user_message(CLIENT_TOKEN, ANN, media_group_id="alb", **fake.photo(bytes([i]) * 40))
        fake.user_message(CLIENT_TOKEN, ANN, text="after the album")
        album, after = await rec.wait_for(2)
    assert [a.data for a in album.attachments] == [bytes([i]) * 40 for i in range(3)]
    assert after.text == "after the album"


# Shaped as the examples of Telegram's webhook guide (core.telegram.org/bots/webhooks, "Testing
# your bot with updates"): whitespace, key order and \u escapes that a re-encoding would change.
DOC_BODIES = [
    b'''{
"update_id":10000,
"message":{
  "date":1441645532,
  "chat":{
     "last_name":"Test Lastname",
     "id":1111111,
     "type": "private",
     "first_name":"Test",
     "username":"Test"
  },
  "message_id":1365,
  "from":{
     "last_name":"Test Lastname",
     "id":1111111,
     "first_name":"Test",
     "username":"Test"
  },
  "text":"/start"
}
}''',
    b'''{"update_id":10001,
"message":{"date":1441645533,"chat":{"last_name":"Test Lastname","type":"private","id":1111111,"first_name":"Test",
"username":"Test"},"message_id":1366,"from":{"last_name":"Test Lastname","id":1111111,"first_name":"Test",
"username":"Test"},"text":"Caf\\u00e9 \\u2615 / 4.50"}}
''',
]


async def test_webhook_raw_is_the_body_as_received(fake: FakeTelegram) -> None:
    rec = Recorder()
    async with hooked(fake, rec) as (_, url):
        async with aiohttp.ClientSession() as session:
            for body in DOC_BODIES:
                async with session.post(url, data=body, headers={SECRET_HEADER: SECRET,
                                                                  "Content-Type": "application/json"}) as resp:
                    assert resp.status == 200, await resp.text()
        start, cafe = await rec.wait_for(2)
    assert (start.text, cafe.text) == ("/start", "Caf\u00e9 \u2615 / 4.50")
    assert [start.raw, cafe.raw] == DOC_BODIES


async def test_webhook_album_raw_is_the_array_of_bodies_as_received(fake: FakeTelegram) -> None:
    rec = Recorder()
    async with hooked(fake, rec):
        first = fake.user_message(CLIENT_TOKEN, ANN, media_group_id="alb", caption="caf\u00e9", **fake.photo(b"a" * 40))
        second = fake.user_message(CLIENT_TOKEN, ANN, media_group_id="alb", **fake.photo(b"b" * 40))
        ids = [first["message_id"], second["message_id"]]
        [album] = await rec.wait_for(1)
    bodies = fake.bots[CLIENT_TOKEN].webhook_bodies
    assert len(ids) == 2 and len(bodies) == 2
    assert album.raw == b"[" + b",".join(bodies[uid] for uid in sorted(bodies)) + b"]"

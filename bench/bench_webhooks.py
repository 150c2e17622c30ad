"""Webhook intake cost per message: signature check, parse, dedupe bookkeeping and `deliver`.

WhatsApp: `WhatsAppChannel.receive` on signed bodies vs a baseline of only the unavoidable
work (HMAC-SHA256 and json.loads). WeChat safe mode: `WeChatChannel.receive` vs only the SHA1
signature, AES decryption and XML parse. Both with a `deliver` that returns at once, over real
HTTP is not measured here (the aiohttp server is the same for every channel).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import statistics
import time
import xml.etree.ElementTree as ET
from typing import Any, Callable

from aiohttp import web

from bots.base import ChannelContext
from bots.wechat.channel import WeChatChannel, WeChatSettings
from bots.wechat.crypto import WeChatCrypto, sha1_signature
from bots.whatsapp.channel import WhatsAppChannel, WhatsAppSettings
from relay.model import Inbound, Receipt

N = 5000
RUNS = 5
AES_KEY = "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR"
APP_ID = "wx49f0ab532d5d035a"


class _State:
    def __init__(self) -> None:
        self.data: dict[str, str] = {}

    async def get(self, key: str) -> str | None:
        return self.data.get(key)

    async def put(self, key: str, value: str) -> None:
        self.data[key] = value


async def _deliver(inbound: Inbound) -> Receipt:
    return Receipt("m", "c")


def _ctx(name: str) -> ChannelContext:
    return ChannelContext(name=name, side="client", state=_State(), app=web.Application(), data_dir="/tmp",
                          max_attachment_bytes=1 << 20, wake=lambda a: None)


def _wa_bodies() -> list[tuple[bytes, str]]:
    out = []
    for i in range(N):
        body = json.dumps({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp", "metadata": {"display_phone_number": "1", "phone_number_id": "1"},
            "contacts": [{"profile": {"name": "Client"}, "wa_id": "15551234567"}],
            "messages": [{"from": "15551234567", "id": f"wamid.{i}", "timestamp": str(int(time.time())), "type": "text",
                          "text": {"body": f"Hello, I would like to move 5,000 EUR to my savings account ({i})"}}]}}]}]}).encode()
        out.append((body, "sha256=" + hmac.new(b"secret", body, hashlib.sha256).hexdigest()))
    return out


def _wc_pushes() -> list[tuple[dict[str, str], bytes]]:
    crypto = WeChatCrypto(AES_KEY, APP_ID)
    out = []
    for i in range(N):
        xml = (f"<xml><ToUserName><![CDATA[gh]]></ToUserName><FromUserName><![CDATA[openid]]></FromUserName>"
               f"<CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[text]]></MsgType>"
               f"<Content><![CDATA[你好，我想了解一下基金 {i}]]></Content><MsgId>{10**15 + i}</MsgId></xml>").encode()
        enc = crypto.encrypt(xml)
        ts = str(int(time.time()))
        q = {"timestamp": ts, "nonce": str(i), "encrypt_type": "aes", "msg_signature": sha1_signature("tok", ts, str(i), enc)}
        out.append((q, f"<xml><Encrypt><![CDATA[{enc}]]></Encrypt></xml>".encode()))
    return out


def _time(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _wa_adapter(bodies: list[tuple[bytes, str]]) -> None:
    async def run() -> None:
        cfg = WhatsAppSettings.parse("wa", {"phone_number_id": "1", "access_token": "t", "app_secret": "secret", "verify_token": "v"})
        ch = WhatsAppChannel("wa", cfg, _ctx("wa"))
        await ch.start(_deliver)
        for body, sig in bodies:
            assert await ch.receive(body, sig) == 200

    asyncio.run(run())


def _wa_baseline(bodies: list[tuple[bytes, str]]) -> None:
    for body, sig in bodies:
        assert hmac.compare_digest(sig[7:], hmac.new(b"secret", body, hashlib.sha256).hexdigest())
        json.loads(body)


def _wc_adapter(pushes: list[tuple[dict[str, str], bytes]]) -> None:
    async def run() -> None:
        cfg = WeChatSettings.parse("wx", {"app_id": APP_ID, "app_secret": "s", "token": "tok", "encoding_aes_key": AES_KEY})
        ch = WeChatChannel("wx", cfg, _ctx("wx"))
        await ch.start(_deliver)
        for q, body in pushes:
            assert await ch.receive(q, body) == 200

    asyncio.run(run())


def _wc_baseline(pushes: list[tuple[dict[str, str], bytes]]) -> None:
    crypto = WeChatCrypto(AES_KEY, APP_ID)
    for q, body in pushes:
        enc = ET.fromstring(body).findtext("Encrypt") or ""
        assert sha1_signature("tok", q["timestamp"], q["nonce"], enc) == q["msg_signature"]
        ET.fromstring(crypto.decrypt(enc))


def main() -> None:
    wa, wc = _wa_bodies(), _wc_pushes()
    for label, adapter, baseline, data in (("whatsapp", _wa_adapter, _wa_baseline, wa), ("wechat safe mode", _wc_adapter, _wc_baseline, wc)):
        a = statistics.median(_time(lambda: adapter(data)) for _ in range(RUNS))
        b = statistics.median(_time(lambda: baseline(data)) for _ in range(RUNS))
        print(f"{label}: adapter {N / a:,.0f} webhooks/s ({a / N * 1e6:.1f} µs each), "
              f"baseline (signature + parse only) {N / b:,.0f}/s; ratio adapter/baseline time {a / b:.2f}x "
              f"(median of {RUNS} runs of {N})")


if __name__ == "__main__":
    main()

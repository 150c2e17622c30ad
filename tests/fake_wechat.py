"""A fake WeChat Official Account API on loopback that also plays the network's side.

It serves what the adapter calls (token, customer-service send, media upload/get) in the
documented formats and error codes, enforces the 48-hour window (45015), injects faults,
and signs (and in safe mode encrypts) pushes exactly as WeChat does.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from bots.wechat.crypto import WeChatCrypto, sha1_signature
from tests.fake_server import FakeServer

ERRMSG: dict[int, str] = {
    -1: "system error",
    40001: "invalid credential, access_token is invalid or not latest",
    40003: "invalid openid",
    40007: "invalid media_id",
    40013: "invalid appid",
    40014: "invalid access_token",
    42001: "access_token expired",
    44002: "empty post data",
    45009: "reach max api daily quota limit",
    45015: "response out of time limit or subscription is canceled",
    47001: "data format error",
}


@dataclass
class Fault:
    errcode: int | None = None
    status: int | None = None
    delay: float = 0.0


@dataclass
class FakeMedia:
    data: bytes
    mime: str
    filename: str
    as_video_url: bool = False
    chunked: bool = False


@dataclass
class FakeWeChat(FakeServer):
    app_id: str = "wx49f0ab532d5d035a"
    app_secret: str = "wechat-secret"
    token: str = "push-token"
    encoding_aes_key: str | None = None
    account: str = "gh_account"
    expires_in: int = 7200
    valid_tokens: set[str] = field(default_factory=set)
    token_fetches: int = 0
    faults: list[Fault] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)
    uploads: list[tuple[str, str, bytes]] = field(default_factory=list)
    media: dict[str, FakeMedia] = field(default_factory=dict)
    media_gets: list[str] = field(default_factory=list)
    last_interaction: dict[str, float] = field(default_factory=dict)

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/cgi-bin/token", self._token)
        app.router.add_post("/cgi-bin/message/custom/send", self._custom_send)
        app.router.add_post("/cgi-bin/media/upload", self._upload)
        app.router.add_get("/cgi-bin/media/get", self._media_get)
        app.router.add_get("/video/{media_id}", self._video)

    # --- API ---------------------------------------------------------------------------

    @staticmethod
    def err(code: int) -> web.Response:
        return web.json_response({"errcode": code, "errmsg": f"{ERRMSG.get(code, 'error')} rid: 6650f1a2-0f1e"})

    def expire_tokens(self) -> None:
        self.valid_tokens.clear()

    def fail_next(self, errcode: int | None = None, status: int | None = None, delay: float = 0.0, times: int = 1) -> None:
        self.faults.extend(Fault(errcode, status, delay) for _ in range(times))

    async def _fault(self) -> web.Response | None:
        fault = await self._next_fault()
        if fault is None:
            return None
        if fault.errcode is not None:
            return self.err(fault.errcode)
        if fault.status is not None:
            return web.Response(status=fault.status, text="<html>502 Bad Gateway</html>")
        return None

    def _token_error(self, request: web.Request) -> web.Response | None:
        token = request.query.get("access_token")
        if not token:
            return self.err(41001)
        if token not in self.valid_tokens:
            return self.err(42001 if token.startswith("tok-") else 40014)
        return None

    async def _token(self, request: web.Request) -> web.Response:
        q = request.query
        if q.get("grant_type") != "client_credential" or q.get("appid") != self.app_id:
            return self.err(40013)
        if q.get("secret") != self.app_secret:
            return self.err(40001)
        self.token_fetches += 1
        token = f"tok-{next(self._ids)}"
        self.valid_tokens = {token}
        return web.json_response({"access_token": token, "expires_in": self.expires_in})

    async def _custom_send(self, request: web.Request) -> web.Response:
        problem = self._token_error(request)
        if problem is not None:
            return problem
        fault = await self._fault()
        if fault is not None:
            return fault
        raw = await request.read()
        try:
            body = json.loads(raw.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            return self.err(47001)
        touser, msgtype = body.get("touser"), body.get("msgtype")
        if not touser or msgtype not in ("text", "image", "voice", "video", "music", "news", "mpnews", "menu", "miniprogrampage"):
            return self.err(47001)
        if msgtype == "text" and not body.get("text", {}).get("content"):
            return self.err(44002)
        if msgtype in ("image", "voice", "video") and body.get(msgtype, {}).get("media_id") not in self.media:
            return self.err(40007)
        last = self.last_interaction.get(touser)
        if last is None or time.time() - last > 48 * 3600:
            return self.err(45015)
        self.sent.append(body)
        return web.json_response({"errcode": 0, "errmsg": "ok"})

    async def _upload(self, request: web.Request) -> web.Response:
        problem = self._token_error(request)
        if problem is not None:
            return problem
        fault = await self._fault()
        if fault is not None:
            return fault
        kind = request.query.get("type", "")
        form = await request.post()
        upload = form.get("media")
        if kind not in ("image", "voice", "video", "thumb") or not isinstance(upload, web.FileField):
            return self.err(40004)
        data = upload.file.read()
        media_id = f"MEDIA_{next(self._ids)}"
        self.uploads.append((kind, upload.filename, data))
        self.media[media_id] = FakeMedia(data, upload.content_type, upload.filename)
        return web.json_response({"type": kind, "media_id": media_id, "created_at": int(time.time())})

    def add_media(self, media_id: str, data: bytes, mime: str, filename: str = "", as_video_url: bool = False,
                  chunked: bool = False) -> None:
        """`chunked` sends the file without Content-Length, as a proxy may."""
        self.media[media_id] = FakeMedia(data, mime, filename or f"{media_id}.bin", as_video_url, chunked)

    async def _media_get(self, request: web.Request) -> web.StreamResponse:
        problem = self._token_error(request)
        if problem is not None:
            return problem
        fault = await self._fault()
        if fault is not None:
            return fault
        media_id = request.query.get("media_id", "")
        self.media_gets.append(media_id)
        media = self.media.get(media_id)
        if media is None:
            return self.err(40007)
        if media.as_video_url:
            return web.json_response({"video_url": f"{self.url}/video/{media_id}"})
        headers = {"Content-Type": media.mime, "Content-Disposition": f'attachment; filename="{media.filename}"'}
        if not media.chunked:
            return web.Response(body=media.data, headers=headers)
        stream = web.StreamResponse(headers=headers)
        stream.enable_chunked_encoding()
        await stream.prepare(request)
        for i in range(0, len(media.data), 1024):
            await stream.write(media.data[i:i + 1024])
        await stream.write_eof()
        return stream

    async def _video(self, request: web.Request) -> web.Response:
        media = self.media.get(request.match_info["media_id"])
        if media is None:
            return web.Response(status=404)
        return web.Response(body=media.data, content_type=media.mime)

    # --- the network's side: pushes ----------------------------------------------------

    def xml(self, openid: str, msgtype: str, created: int | None = None, msg_id: int | None = None, **fields: str) -> bytes:
        created = int(time.time()) if created is None else created
        parts = [f"<ToUserName><![CDATA[{self.account}]]></ToUserName>",
                 f"<FromUserName><![CDATA[{openid}]]></FromUserName>",
                 f"<CreateTime>{created}</CreateTime>",
                 f"<MsgType><![CDATA[{msgtype}]]></MsgType>"]
        parts += [f"<{k}><![CDATA[{v}]]></{k}>" for k, v in fields.items()]
        if msgtype != "event":
            parts.append(f"<MsgId>{msg_id if msg_id is not None else 10000 + next(self._ids)}</MsgId>")
        return ("<xml>" + "".join(parts) + "</xml>").encode()

    def text(self, openid: str, content: str, **kw: Any) -> bytes:
        return self.xml(openid, "text", Content=content, **kw)

    def signed_query(self, body_for_msg_signature: str | None = None, *, openid: str = "") -> dict[str, str]:
        timestamp, nonce = str(int(time.time())), str(100000 + next(self._ids))
        q = {"signature": sha1_signature(self.token, timestamp, nonce), "timestamp": timestamp, "nonce": nonce}
        if openid:
            q["openid"] = openid
        if body_for_msg_signature is not None:
            q["encrypt_type"] = "aes"
            q["msg_signature"] = sha1_signature(self.token, timestamp, nonce, body_for_msg_signature)
        return q

    def envelope(self, xml: bytes) -> tuple[bytes, dict[str, str]]:
        """A safe-mode push: the XML encrypted into `<Encrypt>` with its `msg_signature`."""
        assert self.encoding_aes_key is not None
        encrypted = WeChatCrypto(self.encoding_aes_key, self.app_id).encrypt(xml)
        body = f"<xml><ToUserName><![CDATA[{self.account}]]></ToUserName><Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>"
        return body.encode(), self.signed_query(encrypted)

    async def push(self, url: str, xml: bytes, *, query: dict[str, str] | None = None, safe: bool | None = None,
                   body: bytes | None = None) -> tuple[int, str]:
        """POST a push as WeChat does: signed query, plain or encrypted body."""
        safe = self.encoding_aes_key is not None if safe is None else safe
        if safe and body is None:
            body, signed = self.envelope(xml)
        else:
            signed = self.signed_query()
        self._note_interaction(xml)
        assert self._session is not None
        async with self._session.post(url, data=xml if body is None else body, params=query if query is not None else signed,
                                      headers={"Content-Type": "text/xml"}) as resp:
            return resp.status, await resp.text()

    def _note_interaction(self, xml: bytes) -> None:
        sender = re.search(rb"<FromUserName><!\[CDATA\[(.*?)\]\]>", xml)
        created = re.search(rb"<CreateTime>(\d+)</CreateTime>", xml)
        unsubscribe = b"<Event><![CDATA[unsubscribe]]>" in xml
        if sender and created and not unsubscribe:
            who = sender.group(1).decode()
            self.last_interaction[who] = max(float(created.group(1)), self.last_interaction.get(who, 0.0))

    async def verify(self, url: str, echostr: str, *, good: bool = True) -> tuple[int, str]:
        q = self.signed_query()
        q["echostr"] = echostr
        if not good:
            q["signature"] = "0" * 40
        assert self._session is not None
        async with self._session.get(url, params=q) as resp:
            return resp.status, await resp.text()


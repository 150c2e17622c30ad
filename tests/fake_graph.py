"""A fake WhatsApp Cloud API (Graph API) on loopback that also plays the network's side.

It serves what the adapter calls (media lookup and download, media upload, /messages) in the
documented formats, enforces the 24-hour window with error 131047, injects faults, and signs
and POSTs webhooks to the adapter exactly as Meta does (`X-Hub-Signature-256`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

from aiohttp import web

from tests.fake_server import FakeServer

ERRORS: dict[int, tuple[int, str]] = {
    4: (400, "Application request limit reached"),
    80007: (400, "Rate limit issues"),
    130429: (400, "Rate limit hit"),
    131048: (400, "Spam rate limit hit"),
    131056: (400, "(Business Account, Consumer Account) pair rate limit hit"),
    131047: (400, "Re-engagement message"),
    131026: (400, "Message Undeliverable"),
    132001: (404, "Template name does not exist in the translation"),
    100: (400, "Invalid parameter"),
    190: (401, "Invalid OAuth access token"),
    131000: (500, "Something went wrong"),
}


@dataclass
class Media:
    data: bytes
    mime: str
    declared_size: Any = None
    served: bytes | None = None


@dataclass
class Fault:
    code: int | None = None
    status: int | None = None
    delay: float = 0.0


@dataclass
class FakeGraph(FakeServer):
    MAX_BODY: ClassVar[int] = 200 << 20

    app_secret: str = "app-secret"
    access_token: str = "graph-token"
    phone_number_id: str = "1122334455667"
    templates: tuple[str, ...] = ("reengage",)
    media: dict[str, Media] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)
    uploads: list[tuple[str, str, bytes]] = field(default_factory=list)
    lookups: list[str] = field(default_factory=list)
    downloads: list[str] = field(default_factory=list)
    last_user_message: dict[str, float] = field(default_factory=dict)

    # --- server ------------------------------------------------------------------------

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/download/{media_id}", self._download)
        app.router.add_get("/{version}/{media_id}", self._lookup)
        app.router.add_post("/{version}/{phone}/messages", self._messages)
        app.router.add_post("/{version}/{phone}/media", self._upload)

    def add_media(self, media_id: str, data: bytes, mime: str, declared_size: Any = "exact",
                  served: bytes | None = None) -> None:
        """`declared_size` is what the lookup reports: "exact" (as a string, like Meta often
        does), a number, a string, or None to leave `file_size` out. `served`: other bytes than
        the lookup's `sha256` names, as a corrupted or substituted download would deliver."""
        self.media[media_id] = Media(data, mime, str(len(data)) if declared_size == "exact" else declared_size, served)

    def fail_next(self, code: int | None = None, status: int | None = None, delay: float = 0.0, times: int = 1) -> None:
        self.faults.extend(Fault(code, status, delay) for _ in range(times))

    @staticmethod
    def error(code: int, status: int | None = None, details: str = "") -> web.Response:
        http, message = ERRORS.get(code, (400, "Error"))
        body = {"error": {"message": f"(#{code}) {message}", "type": "OAuthException", "code": code,
                          "error_data": {"messaging_product": "whatsapp", "details": details or message},
                          "fbtrace_id": "AbCdEf"}}
        return web.json_response(body, status=status or http)

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.access_token}"

    async def _fault(self) -> web.Response | None:
        fault = await self._next_fault()
        if fault is None:
            return None
        if fault.code is not None:
            return self.error(fault.code, fault.status)
        if fault.status is not None:
            return web.Response(status=fault.status, text="upstream trouble")
        return None

    async def _lookup(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self.error(190)
        media_id = request.match_info["media_id"]
        self.lookups.append(media_id)
        fault = await self._fault()
        if fault is not None:
            return fault
        media = self.media.get(media_id)
        if media is None:
            return self.error(100, details=f"Unsupported get request. Object with ID '{media_id}' does not exist")
        body: dict[str, Any] = {
            "messaging_product": "whatsapp",
            "url": f"{self.url}/download/{media_id}",
            "mime_type": media.mime,
            "sha256": hashlib.sha256(media.data).hexdigest(),
            "id": media_id,
        }
        if media.declared_size is not None:
            body["file_size"] = media.declared_size
        return web.json_response(body)

    async def _download(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return web.Response(status=401)
        media_id = request.match_info["media_id"]
        self.downloads.append(media_id)
        media = self.media.get(media_id)
        if media is None:
            return web.Response(status=404)
        return web.Response(body=media.data if media.served is None else media.served, content_type=media.mime.split(";")[0])

    async def _upload(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self.error(190)
        fault = await self._fault()
        if fault is not None:
            return fault
        form = await request.post()
        upload = form.get("file")
        if form.get("messaging_product") != "whatsapp" or not isinstance(upload, web.FileField):
            return self.error(100, details="messaging_product and file are required")
        data = upload.file.read()
        self.uploads.append((str(form.get("type")), upload.filename, data))
        media_id = f"up-{next(self._ids)}"
        self.media[media_id] = Media(data, str(form.get("type")), str(len(data)))
        return web.json_response({"id": media_id})

    async def _messages(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self.error(190)
        if request.match_info["phone"] != self.phone_number_id:
            return self.error(100, details="Unknown phone number id")
        fault = await self._fault()
        if fault is not None:
            return fault
        try:
            body = await request.json()
        except ValueError:
            return self.error(100, details="Request body is not JSON")
        kind = body.get("type", "text")
        to = body.get("to")
        if body.get("messaging_product") != "whatsapp" or not to or not isinstance(body.get(kind), dict):
            return self.error(100, details="messaging_product, to and the type's object are required")
        if kind == "template":
            if body["template"].get("name") not in self.templates or "code" not in body["template"].get("language", {}):
                return self.error(132001)
        else:
            last = self.last_user_message.get(to)
            if last is None or time.time() - last > 24 * 3600:
                return self.error(131047, details="Message failed to send because more than 24 hours have passed "
                                                  "since the customer last replied to this number.")
            if kind == "text" and not body["text"].get("body"):
                return self.error(100, details="text.body is required")
            if kind in ("image", "video", "audio", "document", "sticker") and body[kind].get("id") not in self.media:
                return self.error(131053, details="Media upload error")
        wamid = f"wamid.OUT{next(self._ids)}"
        self.sent.append({**body, "_wamid": wamid})
        return web.json_response({"messaging_product": "whatsapp", "contacts": [{"input": to, "wa_id": to}],
                                  "messages": [{"id": wamid}]})

    # --- the network's side: webhooks --------------------------------------------------

    def sign(self, body: bytes) -> str:
        return "sha256=" + hmac.new(self.app_secret.encode(), body, hashlib.sha256).hexdigest()

    async def post_webhook(self, url: str, body: bytes | dict[str, Any], signature: str | None = "auto") -> tuple[int, str]:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        sig = self.sign(raw) if signature == "auto" else signature
        if sig is not None:
            headers["X-Hub-Signature-256"] = sig
        if isinstance(body, dict):
            self._note_user_messages(body)
        assert self._session is not None
        async with self._session.post(url, data=raw, headers=headers) as resp:
            return resp.status, await resp.text()

    def _note_user_messages(self, body: dict[str, Any]) -> None:
        for entry in body.get("entry", []):
            for change in entry.get("changes", []):
                for msg in change.get("value", {}).get("messages", []) or []:
                    ts = float(msg.get("timestamp", time.time()))
                    self.last_user_message[msg["from"]] = max(ts, self.last_user_message.get(msg["from"], 0.0))

    def notification(self, *, messages: list[dict[str, Any]] | None = None, statuses: list[dict[str, Any]] | None = None,
                     contacts: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        value: dict[str, Any] = {"messaging_product": "whatsapp",
                                 "metadata": {"display_phone_number": "15550001111", "phone_number_id": self.phone_number_id}}
        if contacts is not None:
            value["contacts"] = contacts
        if messages is not None:
            value["messages"] = messages
        if statuses is not None:
            value["statuses"] = statuses
        return {"object": "whatsapp_business_account",
                "entry": [{"id": "102290129340398", "changes": [{"value": value, "field": "messages"}]}]}

    def text_message(self, wa_id: str, text: str, *, wamid: str | None = None, name: str = "Client Name",
                     timestamp: float | None = None, context: str | None = None) -> dict[str, Any]:
        msg: dict[str, Any] = {"from": wa_id, "id": wamid or f"wamid.IN{next(self._ids)}",
                               "timestamp": str(int(timestamp if timestamp is not None else time.time())),
                               "type": "text", "text": {"body": text}}
        if context:
            msg["context"] = {"from": self.phone_number_id, "id": context}
        return self.notification(messages=[msg], contacts=[{"profile": {"name": name}, "wa_id": wa_id}])

    def media_message(self, wa_id: str, kind: str, media_id: str, mime: str, *, caption: str = "",
                      filename: str = "", wamid: str | None = None) -> dict[str, Any]:
        obj: dict[str, Any] = {"id": media_id, "mime_type": mime, "sha256": "aGVsbG8="}
        if caption:
            obj["caption"] = caption
        if filename:
            obj["filename"] = filename
        msg = {"from": wa_id, "id": wamid or f"wamid.IN{next(self._ids)}", "timestamp": str(int(time.time())),
               "type": kind, kind: obj}
        return self.notification(messages=[msg], contacts=[{"profile": {"name": "Client Name"}, "wa_id": wa_id}])

    def status(self, wamid: str, status: str, recipient: str, *, code: int | None = None) -> dict[str, Any]:
        st: dict[str, Any] = {"id": wamid, "status": status, "timestamp": str(int(time.time())), "recipient_id": recipient}
        if code is not None:
            _, title = ERRORS.get(code, (400, "Error"))
            st["errors"] = [{"code": code, "title": title, "message": title, "error_data": {"details": title}}]
        return self.notification(statuses=[st])

"""A fake Slack Web API and Events API sender on loopback.

It serves what the Slack adapter calls through slack_sdk's AsyncWebClient (`base_url` pointed
here): auth.test, chat.postMessage / update / delete, the three-step file upload
(files.getUploadURLExternal, the upload URL, files.completeUploadExternal) and private file
downloads, answering `{"ok": false, "error": …}` as Slack does, 429 with Retry-After when a
fault is queued. It plays Slack's side of the Events API: event_callback and url_verification
bodies signed `X-Slack-Signature: v0=HMAC-SHA256(signing secret, "v0:<ts>:<body>")`, computed
here independently of slack_sdk.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fake_server import FakeServer


@dataclass
class Fault:
    status: int = 429
    error: str = "ratelimited"
    retry_after: str | None = "1"
    delay: float = 0.0


def sign(secret: str, timestamp: str, body: bytes) -> str:
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


@dataclass
class FakeSlack(FakeServer):
    token: str = "xoxb-fake-token"
    signing_secret: str = "slack-signing-secret"
    channel: str = "C0STAFF01"
    bot_user: str = "U0RELAYBOT"
    team: str = "T0BANK"
    posts: list[dict[str, Any]] = field(default_factory=list)
    updates: list[dict[str, Any]] = field(default_factory=list)
    deletes: list[dict[str, Any]] = field(default_factory=list)
    uploads: dict[str, dict[str, Any]] = field(default_factory=dict)
    shared: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    downloads: list[str] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    _ts: itertools.count = field(default_factory=lambda: itertools.count(1))

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/api/{method}", self._api)
        app.router.add_post("/upload/{file_id}", self._upload)
        app.router.add_get("/files-pri/{file_id}/{name}", self._download)

    def fail_next(self, status: int = 429, error: str = "ratelimited", retry_after: str | None = "1", times: int = 1) -> None:
        self.faults.extend(Fault(status, error, retry_after) for _ in range(times))

    def next_ts(self) -> str:
        return f"{int(time.time())}.{next(self._ts):06d}"

    async def _args(self, request: web.Request) -> dict[str, Any]:
        args: dict[str, Any] = dict(request.query)
        if request.content_type == "application/json":
            args.update(await request.json())
        else:
            args.update({k: v for k, v in (await request.post()).items() if isinstance(v, str)})
        return args

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        self.calls.append(method)
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.json_response({"ok": False, "error": "invalid_auth"})
        fault = await self._next_fault()
        if fault is not None:
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else None
            if fault.status >= 500:
                return web.Response(status=fault.status, text="upstream connect error", headers=headers)
            return web.json_response({"ok": False, "error": fault.error}, status=fault.status, headers=headers)
        args = await self._args(request)
        handler = getattr(self, "_" + method.replace(".", "_"), None)
        if handler is None:
            return web.json_response({"ok": False, "error": "unknown_method"})
        return web.json_response(handler(args))

    def _auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "user_id": self.bot_user, "team_id": self.team, "bot_id": "B0RELAY"}

    def _chat_postMessage(self, args: dict[str, Any]) -> dict[str, Any]:
        if args.get("channel") != self.channel:
            return {"ok": False, "error": "channel_not_found"}
        if not args.get("text") and not args.get("blocks"):
            return {"ok": False, "error": "no_text"}
        if len(str(args.get("text", ""))) > 40000:
            return {"ok": False, "error": "msg_too_long"}
        ts = self.next_ts()
        self.posts.append({**args, "ts": ts})
        return {"ok": True, "channel": self.channel, "ts": ts,
                "message": {"type": "message", "text": args.get("text"), "user": self.bot_user, "ts": ts}}

    def _find(self, ts: str) -> dict[str, Any] | None:
        return next((p for p in self.posts if p["ts"] == ts), None)

    def _chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        post = self._find(str(args.get("ts")))
        if post is None:
            return {"ok": False, "error": "message_not_found"}
        post["text"] = args.get("text")
        self.updates.append(args)
        return {"ok": True, "channel": self.channel, "ts": post["ts"], "text": args.get("text")}

    def _chat_delete(self, args: dict[str, Any]) -> dict[str, Any]:
        post = self._find(str(args.get("ts")))
        if post is None:
            return {"ok": False, "error": "message_not_found"}
        self.posts.remove(post)
        self.deletes.append(args)
        return {"ok": True, "channel": self.channel, "ts": post["ts"]}

    def _files_getUploadURLExternal(self, args: dict[str, Any]) -> dict[str, Any]:
        if not args.get("filename") or not str(args.get("length", "")).isdigit():
            return {"ok": False, "error": "invalid_arguments"}
        file_id = "F" + secrets.token_hex(5).upper()
        self.uploads[file_id] = {"filename": args["filename"], "length": int(args["length"]), "data": None}
        return {"ok": True, "upload_url": f"{self.url}/upload/{file_id}", "file_id": file_id}

    def _files_completeUploadExternal(self, args: dict[str, Any]) -> dict[str, Any]:
        files = json.loads(args["files"]) if isinstance(args.get("files"), str) else args.get("files") or []
        out = []
        for f in files:
            up = self.uploads.get(f.get("id"))
            if up is None or up["data"] is None:
                return {"ok": False, "error": "file_not_found"}
            out.append({"id": f["id"], "name": up["filename"], "title": f.get("title"), "size": len(up["data"])})
            self.shared.append({"id": f["id"], "name": up["filename"], "data": up["data"],
                                "channel": args.get("channel_id"), "thread_ts": args.get("thread_ts"),
                                "initial_comment": args.get("initial_comment")})
        return {"ok": True, "files": out}

    async def _upload(self, request: web.Request) -> web.Response:
        up = self.uploads.get(request.match_info["file_id"])
        if up is None:
            return web.Response(status=404, text="not found")
        up["data"] = await request.read()
        return web.Response(text=f"OK - {len(up['data'])}")

    def add_file(self, name: str, data: bytes, mime: str) -> dict[str, Any]:
        """A file an employee shared; the `files[]` entry of its message event."""
        file_id = "F" + secrets.token_hex(5).upper()
        self.files[file_id] = (data, mime)
        return {"id": file_id, "name": name, "mimetype": mime, "size": len(data),
                "url_private_download": f"{self.url}/files-pri/{file_id}/{name}"}

    async def _download(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.Response(status=302, headers={"Location": "https://slack.com/signin"})
        file_id = request.match_info["file_id"]
        self.downloads.append(file_id)
        data, mime = self.files[file_id]
        return web.Response(body=data, content_type=mime)

    # --- Slack's side of the Events API -----------------------------------------------------

    def envelope(self, event: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
        return {"token": "legacy", "team_id": self.team, "api_app_id": "A0RELAY", "type": "event_callback",
                "event": event, "event_id": event_id or "Ev" + secrets.token_hex(5).upper(),
                "event_time": int(time.time()), "authorizations": [{"user_id": self.bot_user, "is_bot": True}]}

    def message(self, user: str, text: str, thread_ts: str | None, *, ts: str | None = None,
                files: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        event: dict[str, Any] = {"type": "message", "channel": self.channel, "user": user, "text": text,
                                 "ts": ts or self.next_ts(), "channel_type": "channel"}
        if thread_ts:
            event["thread_ts"] = thread_ts
        if files:
            event["subtype"] = "file_share"
            event["files"] = files
        return event

    def edited(self, original: dict[str, Any], text: str) -> dict[str, Any]:
        new = {**original, "text": text, "edited": {"user": original.get("user"), "ts": self.next_ts()}}
        new.pop("channel", None)
        return {"type": "message", "subtype": "message_changed", "channel": self.channel, "hidden": True,
                "message": new, "previous_message": {k: v for k, v in original.items() if k != "channel"},
                "ts": self.next_ts(), "event_ts": self.next_ts()}

    def deleted(self, original: dict[str, Any]) -> dict[str, Any]:
        return {"type": "message", "subtype": "message_deleted", "channel": self.channel, "hidden": True,
                "deleted_ts": original["ts"], "previous_message": {k: v for k, v in original.items() if k != "channel"},
                "ts": self.next_ts(), "event_ts": self.next_ts()}

    async def post_event(self, url: str, body: dict[str, Any] | bytes, *, timestamp: float | None = None,
                         signature: str | None = "auto", retry: int = 0) -> tuple[int, str]:
        assert self._session is not None
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        ts = str(int(timestamp if timestamp is not None else time.time()))
        headers = {"Content-Type": "application/json", "X-Slack-Request-Timestamp": ts}
        if signature == "auto":
            headers["X-Slack-Signature"] = sign(self.signing_secret, ts, raw)
        elif signature is not None:
            headers["X-Slack-Signature"] = signature
        if retry:
            headers["X-Slack-Retry-Num"] = str(retry)
            headers["X-Slack-Retry-Reason"] = "http_timeout"
        async with self._session.post(url, data=raw, headers=headers) as resp:
            return resp.status, await resp.text()


__all__ = ["FakeSlack", "sign"]

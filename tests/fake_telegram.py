"""A fake Telegram Bot API server on loopback, speaking the documented wire protocol.

It holds bots (tokens), chats, forum topics, messages and files, answers what relay's adapter
calls (getMe, getUpdates with offset and long polling, send*, sendMediaGroup, getFile and file
download, editMessageText/Caption, deleteMessage, createForumTopic, setWebhook, deleteWebhook)
and injects faults (429 with retry_after, 5xx, 4xx, slow answers, dropped connections), so the
real python-telegram-bot can be pointed at it with `base_url` and `base_file_url`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from aiohttp import ClientSession, ClientTimeout, web

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
CLOUD_DOWNLOAD_LIMIT = 20 * 1024 * 1024


class ApiError(Exception):
    def __init__(self, code: int, description: str, parameters: dict[str, Any] | None = None) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.parameters = parameters


@dataclass
class Fault:
    """One injected failure: applies to `times` calls of `method` (None: any), after letting
    `skip` matching calls through."""

    kind: str
    method: str | None = None
    token: str | None = None
    times: int = 1
    retry_after: int = 1
    delay: float = 0.0
    description: str = ""
    skip: int = 0


@dataclass
class StoredFile:
    file_id: str
    unique_id: str
    path: str
    data: bytes
    size: int


@dataclass
class FakeBot:
    token: str
    user: dict[str, Any]
    updates: list[dict[str, Any]] = field(default_factory=list)
    next_update_id: int = 1000
    new_update: asyncio.Event = field(default_factory=asyncio.Event)
    webhook_url: str = ""
    webhook_secret: str = ""
    webhook_max_connections: int = 40
    webhook_task: asyncio.Task[None] | None = None
    webhook_posts: list[tuple[int, int]] = field(default_factory=list)
    webhook_bodies: dict[int, bytes] = field(default_factory=dict)
    """update_id → the exact body posted for it (the bytes relay must journal as the raw)."""


@dataclass
class Call:
    token: str
    method: str
    params: dict[str, Any]
    at: float


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


class FakeTelegram:
    """The fake server; `await start()`, point PTB at `base_url`/`base_file_url`."""

    def __init__(self) -> None:
        self.bots: dict[str, FakeBot] = {}
        self.chats: dict[int, dict[str, Any]] = {}
        self.topics: dict[int, dict[int, str]] = {}
        self.messages: dict[tuple[int, int], dict[str, Any]] = {}
        self.next_message_id: dict[int, int] = {}
        self.files: dict[str, StoredFile] = {}
        self.files_by_path: dict[str, StoredFile] = {}
        self.blocked: set[tuple[str, int]] = set()
        self.on_bot_message: Callable[[dict[str, Any]], None] | None = None
        self.calls: list[Call] = []
        self.downloads: list[str] = []
        self.faults: list[Fault] = []
        self.fault_log: list[tuple[str, str]] = []
        self.webhook_retry_delay = 0.05
        self.duplicate_webhooks = False
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._session: ClientSession | None = None
        self.port = 0

    # ----- server lifecycle -----

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._api)
        app.router.add_get("/file/bot{token}/{path:.+}", self._download)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # noqa: SLF001
        self._session = ClientSession(timeout=ClientTimeout(total=10))

    async def stop(self) -> None:
        for bot in self.bots.values():
            if bot.webhook_task:
                bot.webhook_task.cancel()
        if self._session:
            await self._session.close()
        if self._runner:
            await self._runner.cleanup()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/bot"

    @property
    def base_file_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/file/bot"

    # ----- test-side world building -----

    def add_bot(self, token: str, username: str) -> dict[str, Any]:
        user = {"id": 7_000_000 + len(self.bots), "is_bot": True, "first_name": username, "username": username,
                "can_join_groups": True, "can_read_all_group_messages": True, "supports_inline_queries": False}
        self.bots[token] = FakeBot(token, user)
        return user

    @staticmethod
    def user(uid: int, first_name: str, last_name: str = "", username: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {"id": uid, "is_bot": False, "first_name": first_name, "language_code": "en"}
        if last_name:
            out["last_name"] = last_name
        if username:
            out["username"] = username
        return out

    def private_chat(self, user: dict[str, Any]) -> dict[str, Any]:
        chat = {"id": user["id"], "type": "private", "first_name": user["first_name"]}
        if "last_name" in user:
            chat["last_name"] = user["last_name"]
        if "username" in user:
            chat["username"] = user["username"]
        self.chats.setdefault(user["id"], chat)
        return self.chats[user["id"]]

    def add_forum(self, chat_id: int, title: str) -> dict[str, Any]:
        chat = {"id": chat_id, "type": "supergroup", "title": title, "is_forum": True}
        self.chats[chat_id] = chat
        self.topics[chat_id] = {}
        return chat

    def add_topic(self, chat_id: int, name: str) -> int:
        """A topic a person opened in the forum (relay's bot did not create it)."""
        thread = self._new_message_id(chat_id)
        self.messages[(chat_id, thread)] = {"message_id": thread, "chat": self.chats[chat_id], "date": int(time.time()),
                                            "message_thread_id": thread, "is_topic_message": True,
                                            "forum_topic_created": {"name": name, "icon_color": 7322096}}
        self.topics[chat_id][thread] = name
        return thread

    def delete_topic(self, chat_id: int, thread: int) -> None:
        """An admin deleted the topic in the app: it and its messages are gone; sending into it
        is answered 400 "Bad Request: message thread not found", as Telegram does."""
        del self.topics[chat_id][thread]
        for key in [k for k, m in self.messages.items() if k[0] == chat_id and m.get("message_thread_id") == thread]:
            del self.messages[key]

    def add_group(self, chat_id: int, title: str) -> dict[str, Any]:
        chat = {"id": chat_id, "type": "group", "title": title}
        self.chats[chat_id] = chat
        return chat

    def block(self, token: str, chat_id: int) -> None:
        self.blocked.add((token, chat_id))

    def store_file(self, data: bytes, folder: str = "documents", ext: str = "bin", size: int | None = None) -> dict[str, Any]:
        n = next(self._ids)
        stored = StoredFile(f"AgAC{n:06d}fid", f"AQAD{n:04d}", f"{folder}/file_{n}.{ext}", data, len(data) if size is None else size)
        self.files[stored.file_id] = stored
        self.files_by_path[stored.path] = stored
        return {"file_id": stored.file_id, "file_unique_id": stored.unique_id, "file_size": stored.size}

    # real-shaped content fragments, to merge into a user message
    def photo(self, data: bytes, width: int = 1280, height: int = 960) -> dict[str, Any]:
        thumb = self.store_file(data[: max(1, len(data) // 8)], "photos", "jpg")
        full = self.store_file(data, "photos", "jpg")
        return {"photo": [{**thumb, "width": 90, "height": 68}, {**full, "width": width, "height": height}]}

    def document(self, data: bytes, file_name: str, mime_type: str, size: int | None = None) -> dict[str, Any]:
        ref = self.store_file(data, "documents", file_name.rsplit(".", 1)[-1], size=size)
        return {"document": {**ref, "file_name": file_name, "mime_type": mime_type}}

    def voice(self, data: bytes, duration: int = 3) -> dict[str, Any]:
        return {"voice": {**self.store_file(data, "voice", "oga"), "duration": duration, "mime_type": "audio/ogg"}}

    def audio(self, data: bytes, file_name: str = "song.mp3") -> dict[str, Any]:
        ref = self.store_file(data, "music", "mp3")
        return {"audio": {**ref, "duration": 180, "performer": "Band", "title": "Song", "file_name": file_name, "mime_type": "audio/mpeg"}}

    def video(self, data: bytes, file_name: str = "clip.mp4") -> dict[str, Any]:
        ref = self.store_file(data, "videos", "mp4")
        return {"video": {**ref, "width": 640, "height": 360, "duration": 5, "file_name": file_name, "mime_type": "video/mp4"}}

    def video_note(self, data: bytes) -> dict[str, Any]:
        return {"video_note": {**self.store_file(data, "video_notes", "mp4"), "length": 240, "duration": 4}}

    def sticker(self, data: bytes) -> dict[str, Any]:
        ref = self.store_file(data, "stickers", "webp")
        return {"sticker": {**ref, "type": "regular", "width": 512, "height": 512, "is_animated": False,
                            "is_video": False, "emoji": "\U0001F44D", "set_name": "HotCherry"}}

    def animation(self, data: bytes) -> dict[str, Any]:
        ref = self.store_file(data, "animations", "mp4")
        fields = {"file_name": "cat.gif.mp4", "mime_type": "video/mp4"}
        return {"animation": {**ref, "width": 320, "height": 240, "duration": 2, **fields}, "document": {**ref, **fields}}

    # ----- updates users cause -----

    def push(self, token: str, kind: str, payload: dict[str, Any]) -> int:
        bot = self.bots[token]
        uid = bot.next_update_id
        bot.next_update_id += 1
        bot.updates.append({"update_id": uid, kind: payload})
        bot.new_update.set()
        self._kick_webhook(bot)
        return uid

    def _new_message_id(self, chat_id: int) -> int:
        mid = self.next_message_id.get(chat_id, 1)
        self.next_message_id[chat_id] = mid + 1
        return mid

    def user_message(
        self, token: str, sender: dict[str, Any], chat_id: int | None = None, thread: int | None = None, **content: Any
    ) -> dict[str, Any]:
        """A message a person sends (to a bot's private chat, or into a forum topic)."""
        chat = self.private_chat(sender) if chat_id is None else self.chats[chat_id]
        msg: dict[str, Any] = {"message_id": self._new_message_id(chat["id"]), "from": sender, "chat": chat, "date": int(time.time())}
        if thread is not None:
            msg["message_thread_id"] = thread
            msg["is_topic_message"] = True
            root = self.messages.get((chat["id"], thread))
            if root is not None:
                msg["reply_to_message"] = root
        msg.update(content)
        self.messages[(chat["id"], msg["message_id"])] = msg
        self.push(token, "message", msg)
        return msg

    def user_edit(self, token: str, original: dict[str, Any], **changes: Any) -> dict[str, Any]:
        msg = {**original, **changes, "edit_date": int(time.time()) + len(self.calls) + 1}
        self.messages[(msg["chat"]["id"], msg["message_id"])] = msg
        self.push(token, "edited_message", msg)
        return msg

    # ----- what bots sent -----

    def sent(self, chat_id: int, thread: int | None = None, token: str | None = None) -> list[dict[str, Any]]:
        """Messages bots posted to a chat (optionally one topic, one bot), in order."""
        out = []
        for (cid, _), msg in sorted(self.messages.items()):
            if cid != chat_id or not msg.get("from", {}).get("is_bot"):
                continue
            if thread is not None and msg.get("message_thread_id") != thread:
                continue
            if token is not None and msg["from"]["id"] != self.bots[token].user["id"]:
                continue
            if "forum_topic_created" in msg:
                continue
            out.append(msg)
        return out

    def called(self, method: str, token: str | None = None) -> list[Call]:
        return [c for c in self.calls if c.method == method and (token is None or c.token == token)]

    def file_bytes(self, file_id: str) -> bytes:
        return self.files[file_id].data

    def inject(self, kind: str, method: str | None = None, **kw: Any) -> Fault:
        fault = Fault(kind, method, **kw)
        self.faults.append(fault)
        return fault

    # ----- HTTP handlers -----

    async def _params(self, request: web.Request) -> tuple[dict[str, Any], dict[str, tuple[str, bytes]]]:
        params: dict[str, Any] = dict(request.query)
        files: dict[str, tuple[str, bytes]] = {}
        ctype = request.content_type
        if ctype == "application/json":
            body = await request.read()
            if body:
                params.update(json.loads(body))
        elif request.method == "POST":
            form = await request.post()
            for key, value in form.items():
                if isinstance(value, web.FileField):
                    files[key] = (value.filename, value.file.read())
                else:
                    params[key] = value
        return params, files

    def _fault_for(self, token: str, method: str) -> Fault | None:
        for fault in self.faults:
            if fault.times > 0 and fault.method in (None, method) and fault.token in (None, token):
                if fault.skip > 0:
                    fault.skip -= 1
                    continue
                fault.times -= 1
                self.fault_log.append((method, fault.kind))
                return fault
        return None

    async def _api(self, request: web.Request) -> web.StreamResponse:
        token = request.match_info["token"]
        method = request.match_info["method"]
        params, files = await self._params(request)
        self.calls.append(Call(token, method, {**params, **{k: f"<file {v[0]}>" for k, v in files.items()}}, time.monotonic()))
        fault = self._fault_for(token, method)
        if fault is not None:
            if fault.kind == "slow":
                await asyncio.sleep(fault.delay)
            elif fault.kind == "drop":
                assert request.transport is not None
                request.transport.abort()
                return web.Response(status=500)
            else:
                return self._fault_response(fault)
        bot = self.bots.get(token)
        if bot is None:
            return self._error(ApiError(401, "Unauthorized"))
        handler = getattr(self, f"_m_{method}", None)
        if handler is None:
            return self._error(ApiError(404, "Not Found"))
        try:
            result = await handler(bot, _Params(params), files)
        except ApiError as exc:
            return self._error(exc)
        return web.json_response({"ok": True, "result": result})

    def _fault_response(self, fault: Fault) -> web.Response:
        if fault.kind == "429":
            return self._error(ApiError(429, f"Too Many Requests: retry after {fault.retry_after}", {"retry_after": fault.retry_after}))
        code = int(fault.kind)
        default = {400: "Bad Request: chat not found", 403: "Forbidden: bot was blocked by the user",
                   500: "Internal Server Error", 502: "Bad Gateway"}.get(code, "Error")
        return self._error(ApiError(code, fault.description or default))

    @staticmethod
    def _error(exc: ApiError) -> web.Response:
        body: dict[str, Any] = {"ok": False, "error_code": exc.code, "description": exc.description}
        if exc.parameters:
            body["parameters"] = exc.parameters
        return web.json_response(body, status=exc.code)

    async def _download(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        path = request.match_info["path"]
        self.downloads.append(path)
        fault = self._fault_for(token, "download")
        if fault is not None and fault.kind == "drop":
            assert request.transport is not None
            request.transport.abort()
            return web.Response(status=500)
        stored = self.files_by_path.get(path)
        if token not in self.bots or stored is None:
            return web.Response(status=404, text="Not Found")
        return web.Response(body=stored.data, content_type="application/octet-stream")

    # ----- Bot API methods -----

    async def _m_getMe(self, bot: FakeBot, p: _Params, files: dict[str, tuple[str, bytes]]) -> Any:
        return bot.user

    async def _m_getUpdates(self, bot: FakeBot, p: _Params, files: dict[str, tuple[str, bytes]]) -> Any:
        if bot.webhook_url:
            raise ApiError(409, "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first")
        offset = p.int("offset")
        limit = p.int("limit") or 100
        timeout = p.float("timeout") or 0.0
        deadline = time.monotonic() + timeout
        while True:
            if offset is not None:
                bot.updates = [u for u in bot.updates if u["update_id"] >= offset]
            if bot.updates or time.monotonic() >= deadline:
                return bot.updates[:limit]
            bot.new_update.clear()
            try:
                await asyncio.wait_for(bot.new_update.wait(), max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                pass

    async def _m_setWebhook(self, bot: FakeBot, p: _Params, files: dict[str, tuple[str, bytes]]) -> Any:
        bot.webhook_url = p.str("url") or ""
        bot.webhook_secret = p.str("secret_token") or ""
        bot.webhook_max_connections = p.int("max_connections") or 40
        if p.bool("drop_pending_updates"):
            bot.updates.clear()
        self._kick_webhook(bot)
        return True

    async def _m_deleteWebhook(self, bot: FakeBot, p: _Params, files: dict[str, tuple[str, bytes]]) -> Any:
        bot.webhook_url = ""
        if bot.webhook_task:
            bot.webhook_task.cancel()
            bot.webhook_task = None
        if p.bool("drop_pending_updates"):
            bot.updates.clear()
        return True

    async def _m_getWebhookInfo(self, bot: FakeBot, p: _Params, files: dict[str, tuple[str, bytes]]) -> Any:
        return {"url": bot.webhook_url, "has_custom_certificate": False, "pending_update_count": len(bot.updates)}

    def _chat(self, bot: FakeBot, p: _Params) -> dict[str, Any]:
        raw = p.str("chat_id")
        try:
            chat_id = int(raw or "")
        except ValueError:
            raise ApiError(400, "Bad Request: chat not found") from None
        if chat_id not in self.chats:
            raise ApiError(400, "Bad Request: chat not found")
        if (bot.token, chat_id) in self.blocked:
            raise ApiError(403, "Forbidden: bot was blocked by the user")
        return self.chats[chat_id]

    def _bot_message(self, bot: FakeBot, chat: dict[str, Any], p: _Params, content: dict[str, Any]) -> dict[str, Any]:
        msg: dict[str, Any] = {"message_id": self._new_message_id(chat["id"]), "from": bot.user, "chat": chat, "date": int(time.time())}
        thread = p.int("message_thread_id")
        if thread is not None:
            if thread not in self.topics.get(chat["id"], {}):
                raise ApiError(400, "Bad Request: message thread not found")
            msg["message_thread_id"] = thread
            msg["is_topic_message"] = True
        reply = p.int("reply_to_message_id")
        lenient = p.bool("allow_sending_without_reply")
        if reply is None and p.json("reply_parameters"):
            reply = p.json("reply_parameters").get("message_id")
            lenient = bool(p.json("reply_parameters").get("allow_sending_without_reply"))
        if reply is not None:
            if (chat["id"], reply) in self.messages:
                msg["reply_to_message"] = self.messages[(chat["id"], reply)]
            elif not lenient:
                raise ApiError(400, "Bad Request: message to be replied not found")
        msg.update(content)
        self.messages[(chat["id"], msg["message_id"])] = msg
        if self.on_bot_message is not None:
            self.on_bot_message(msg)
        return msg

    async def _m_sendMessage(self, bot: FakeBot, p: _Params, files: dict[str, tuple[str, bytes]]) -> Any:
        chat = self._chat(bot, p)
        text = p.str("text") or ""
        if not text.strip():
            raise ApiError(400, "Bad Request: message text is empty")
        if _utf16_len(text) > 4096:
            raise ApiError(400, "Bad Request: message is too long")
        return self._bot_message(bot, chat, p, {"text": text})

    def _media_content(self, kind: str, ref: str, files: dict[str, tuple[str, bytes]], spec: dict[str, Any]) -> dict[str, Any]:
        if ref.startswith("attach://"):
            name = ref[len("attach://"):]
            if name not in files:
                raise ApiError(400, f"Bad Request: file {name} not found in request")
            filename, data = files[name]
        elif ref in files:
            filename, data = files[ref]
        elif ref in self.files:
            stored = self.files[ref]
            filename, data = stored.path.rsplit("/", 1)[-1], stored.data
        else:
            raise ApiError(400, "Bad Request: wrong file identifier/HTTP URL specified")
        folder = {"photo": "photos", "video": "videos", "audio": "music", "voice": "voice"}.get(kind, "documents")
        ref_out = self.store_file(data, folder, filename.rsplit(".", 1)[-1] if "." in filename else "bin")
        if kind == "photo":
            return {"photo": [{**ref_out, "width": 800, "height": 600}]}
        item = {**ref_out, "file_name": filename, "mime_type": spec.get("mime_type", "application/octet-stream")}
        if kind == "video":
            item.update(width=640, height=360, duration=1, mime_type="video/mp4")
        if kind in ("audio", "voice"):
            item.update(duration=1)
        return {kind: item}

    async def _send_media(self, kind: str, bot: FakeBot, p: _Params, files: dict[str, tuple[str, bytes]]) -> Any:
        chat = self._chat(bot, p)
        caption = p.str("caption")
        if caption is not None and _utf16_len(caption) > 1024:
            raise ApiError(400, "Bad Request: message caption is too long")
        ref = p.str(kind) or (kind if kind in files else "")
        content = self._media_content(kind, ref, files, {})
        if caption:
            content["caption"] = caption
        return self._bot_message(bot, chat, p, content)

    async def _m_sendPhoto(self, bot: FakeBot, p: _Params, files: dict[str, tuple[str, bytes]]) -> Any:
        return await self._send_media("photo", bot, p, files)

    async def _m_sendDocument(self, bot: FakeBot, p: _Params, files: dict[str, tuple[str, bytes]]) -> Any:
        return await self._send_media("document", bot, p, files)

    async def _m_sendVideo(self, bot: FakeBot, p: _Params, files: dict[str, tuple[str, bytes]]) -> Any:
        return await self._send_media("video", bot, p, files)

    async def _m_sendAudio(self, bot: FakeBot, p: _Params, files: dict[str, tuple[str, bytes]]) -> Any:
        return await self._send_media("audio", bot, p, files)

    async def _m_sendVoice(self, bot: FakeBot, p: _Params, files: dict[str, tuple[str, bytes]]) -> Any:
        return await self._send_media("voice", bot, p, files)

    async def _m_sendMediaGroup(self, bot: FakeBot, p: _Params, files: dict[str, tuple[str, bytes]]) -> Any:
        chat = self._chat(bot, p)
        media = p.json("media")
        if not isinstance(media, list) or not 2 <= len(media) <= 10:
            raise ApiError(400, "Bad Request: media must contain 2-10 items")
        group_id = str(10**17 + next(self._ids))
        out = []
        for item in media:
            kind = item.get("type")
            if kind not in ("photo", "video", "document", "audio"):
                raise ApiError(400, f"Bad Request: unsupported media type {kind!r}")
            content = self._media_content(kind, item.get("media", ""), files, item)
            if item.get("caption"):
                if _utf16_len(item["caption"]) > 1024:
                    raise ApiError(400, "Bad Request: message caption is too long")
                content["caption"] = item["caption"]
            content["media_group_id"] = group_id
            out.append(self._bot_message(bot, chat, p, content))
        return out

    async def _m_getFile(self, bot: FakeBot, p: _Params, files: dict[str, tuple[str, bytes]]) -> Any:
        stored = self.files.get(p.str("file_id") or "")
        if stored is None:
            raise ApiError(400, "Bad Request: invalid file_id")
        if stored.size > CLOUD_DOWNLOAD_LIMIT:
            raise ApiError(400, "Bad Request: file is too big")
        return {"file_id": stored.file_id, "file_unique_id": stored.unique_id, "file_size": stored.size, "file_path": stored.path}

    def _own_message(self, bot: FakeBot, p: _Params) -> dict[str, Any]:
        chat = self._chat(bot, p)
        msg = self.messages.get((chat["id"], p.int("message_id") or 0))
        if msg is None:
            raise ApiError(400, "Bad Request: message to edit not found")
        if msg["from"]["id"] != bot.user["id"]:
            raise ApiError(400, "Bad Request: message can't be edited")
        return msg

    async def _m_editMessageText(self, bot: FakeBot, p: _Params, files: dict[str, tuple[str, bytes]]) -> Any:
        msg = self._own_message(bot, p)
        text = p.str("text") or ""
        if "text" not in msg:
            raise ApiError(400, "Bad Request: there is no text in the message to edit")
        if not text.strip():
            raise ApiError(400, "Bad Request: message text is empty")
        if _utf16_len(text) > 4096:
            raise ApiError(400, "Bad Request: message is too long")
        if msg["text"] == text:
            raise ApiError(400, "Bad Request: message is not modified: specified new message content and reply markup are exactly the same as a current content and reply markup of the message")
        msg["text"] = text
        msg["edit_date"] = int(time.time())
        return msg

    async def _m_editMessageCaption(self, bot: FakeBot, p: _Params, files: dict[str, tuple[str, bytes]]) -> Any:
        msg = self._own_message(bot, p)
        caption = p.str("caption") or ""
        if "text" in msg:
            raise ApiError(400, "Bad Request: there is no caption in the message to edit")
        if _utf16_len(caption) > 1024:
            raise ApiError(400, "Bad Request: message caption is too long")
        if msg.get("caption", "") == caption:
            raise ApiError(400, "Bad Request: message is not modified: specified new message content and reply markup are exactly the same as a current content and reply markup of the message")
        msg["caption"] = caption
        msg["edit_date"] = int(time.time())
        return msg

    async def _m_deleteMessage(self, bot: FakeBot, p: _Params, files: dict[str, tuple[str, bytes]]) -> Any:
        chat = self._chat(bot, p)
        key = (chat["id"], p.int("message_id") or 0)
        if key not in self.messages:
            raise ApiError(400, "Bad Request: message to delete not found")
        del self.messages[key]
        return True

    async def _m_createForumTopic(self, bot: FakeBot, p: _Params, files: dict[str, tuple[str, bytes]]) -> Any:
        chat = self._chat(bot, p)
        if not chat.get("is_forum"):
            raise ApiError(400, "Bad Request: the chat is not a forum")
        name = p.str("name") or ""
        if not 1 <= len(name) <= 128:
            raise ApiError(400, "Bad Request: invalid topic name specified")
        color = p.int("icon_color") or 7322096
        service = self._bot_message(bot, chat, _Params({}), {"forum_topic_created": {"name": name, "icon_color": color}})
        thread = service["message_id"]
        service["message_thread_id"] = thread
        service["is_topic_message"] = True
        self.topics[chat["id"]][thread] = name
        return {"message_thread_id": thread, "name": name, "icon_color": color}

    async def _m_deleteForumTopic(self, bot: FakeBot, p: _Params, files: dict[str, tuple[str, bytes]]) -> Any:
        chat = self._chat(bot, p)
        thread = p.int("message_thread_id")
        if thread not in self.topics.get(chat["id"], {}):
            raise ApiError(400, "Bad Request: message thread not found")
        self.delete_topic(chat["id"], thread)
        return True

    # ----- webhook delivery -----

    def _kick_webhook(self, bot: FakeBot) -> None:
        if bot.webhook_url and (bot.webhook_task is None or bot.webhook_task.done()):
            bot.webhook_task = asyncio.get_running_loop().create_task(self._webhook_loop(bot))

    async def _webhook_loop(self, bot: FakeBot) -> None:
        assert self._session is not None
        limit = asyncio.Semaphore(bot.webhook_max_connections)

        async def post(update: dict[str, Any]) -> bool:
            async with limit:
                try:
                    headers = {SECRET_HEADER: bot.webhook_secret} if bot.webhook_secret else {}
                    headers["Content-Type"] = "application/json"
                    body = json.dumps(update).encode()
                    bot.webhook_bodies[update["update_id"]] = body
                    async with self._session.post(bot.webhook_url, data=body, headers=headers) as resp:  # type: ignore[union-attr]
                        bot.webhook_posts.append((update["update_id"], resp.status))
                        return resp.status == 200
                except Exception:
                    bot.webhook_posts.append((update["update_id"], 0))
                    return False

        while bot.webhook_url and bot.updates:
            batch = list(bot.updates)
            tries = batch + (batch if self.duplicate_webhooks else [])
            results = await asyncio.gather(*(post(u) for u in tries))
            ok = {u["update_id"] for u, r in zip(tries, results) if r}
            bot.updates = [u for u in bot.updates if u["update_id"] not in ok]
            if len(ok) < len({u["update_id"] for u in batch}):
                await asyncio.sleep(self.webhook_retry_delay)


class _Params:
    """Bot API parameters as sent: JSON values, or form strings (JSON-encoded when complex)."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self.raw = raw

    def str(self, key: str) -> str | None:
        value = self.raw.get(key)
        return None if value is None else str(value)

    def int(self, key: str) -> int | None:
        value = self.raw.get(key)
        if value is None or value == "":
            return None
        return int(value)

    def float(self, key: str) -> float | None:
        value = self.raw.get(key)
        return None if value is None or value == "" else float(value)

    def bool(self, key: str) -> bool:
        value = self.raw.get(key)
        return value is True or str(value).lower() == "true"

    def json(self, key: str) -> Any:
        value = self.raw.get(key)
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError:
                return None
        return value

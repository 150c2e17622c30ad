"""Attachment uploads and downloads for the web chat and desk, kept under `<data_dir>/uploads/`.

An upload is streamed to disk with the size limit checked chunk by chunk (nothing over the
limit is ever buffered), waits in `pending/` until a message names it, and its bytes then
live in `files/<sha256>` together with who may fetch them, so retries and history links work.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import mimetypes
import os
import re
import secrets
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.multipart import BodyPartReader

from relay.model import Attachment

log = logging.getLogger("relay.webchat.uploads")

CHUNK = 64 * 1024
MULTIPART_OVERHEAD = 64 * 1024
PENDING_MAX_AGE = 24 * 3600.0
REFUSED_GRACE = 2.0
_UPLOAD_ID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_MIME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,127}$")
_INLINE_MIME = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})


class UnknownUpload(LookupError):
    """A message named an upload id that does not exist or belongs to someone else."""


@dataclass(frozen=True)
class StoredFile:
    """A file the store can serve: where its bytes are and how to present them."""

    path: Path
    name: str
    mime: str


def clean_name(raw: str | None) -> str:
    """A display-safe file name: base name only, no control characters, bounded length."""
    base = (raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(ch for ch in base if unicodedata.category(ch)[0] != "C").strip().strip(".")
    return base[:200] or "file"


def clean_mime(raw: str | None, name: str) -> str:
    mime = (raw or "").split(";", 1)[0].strip().lower()
    if not mime or mime == "application/octet-stream" or not _MIME.match(mime):
        mime = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return mime


def malformed_reason(exc: ValueError | HttpProcessingError) -> str:
    """A one-line reason for a broken multipart body, without echoing its bytes back."""
    if isinstance(exc, HttpProcessingError):
        return "a part header is invalid (no NUL or other control characters in a header or file name)"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


class UploadStore:
    """Pending uploads by id and sent files by sha256, each with an owner/reader list."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.pending = root / "pending"
        self.files = root / "files"
        self.pending.mkdir(parents=True, exist_ok=True)
        self.files.mkdir(parents=True, exist_ok=True)
        self._refused: set[asyncio.BaseTransport] = set()

    async def receive(self, request: web.Request, owner: str) -> web.Response:
        """Handle a multipart upload with a `file` field; 413 as soon as the limit is passed."""
        length = request.content_length
        if length is not None and length > self.max_bytes + MULTIPART_OVERHEAD:
            return await self._refuse(request, owner)
        if not request.content_type.startswith("multipart/"):
            return _json_error(400, "expected multipart/form-data with a `file` field")
        try:
            reader = await request.multipart()
            while True:
                part = await reader.next()
                if part is None:
                    return _json_error(400, "no `file` field in the upload")
                if not isinstance(part, BodyPartReader):
                    return _json_error(400, "nested multipart is not supported")
                if part.name == "file":
                    stored = await self._store_part(part, owner)
                    return stored if stored is not None else await self._refuse(request, owner)
                if not await self._skip_part(part):
                    return _json_error(400, f"unexpected large form field {part.name!r}; send only `file`")
        except (ValueError, HttpProcessingError) as exc:
            return _json_error(400, f"malformed multipart body: {malformed_reason(exc)}")

    async def _refuse(self, request: web.Request, owner: str) -> web.StreamResponse:
        """Answer 413 now and stop reading the socket, so the rest of the body is never taken in.

        The connection is closed after a short grace; until then the client can read the
        answer (closing at once would reset a client still sending, and it could lose the 413).
        """
        log.info("upload by %s refused: over %d bytes", owner, self.max_bytes)
        response = _json_error(413, f"file too large: the limit is {self.max_bytes} bytes")
        response.force_close()
        await response.prepare(request)
        await response.write_eof()
        transport = request.transport
        if transport is not None and not transport.is_closing():
            transport.pause_reading()
            self._refused.add(transport)
            asyncio.get_running_loop().call_later(REFUSED_GRACE, self._drop, transport)
        return response

    async def _skip_part(self, part: BodyPartReader) -> bool:
        seen = 0
        while chunk := await part.read_chunk(CHUNK):
            seen += len(chunk)
            if seen > CHUNK:
                return False
        return True

    async def _store_part(self, part: BodyPartReader, owner: str) -> web.Response | None:
        """Stream the part to disk; None as soon as it is over the limit."""
        upload_id = secrets.token_urlsafe(18)
        name = clean_name(part.filename)
        mime = clean_mime(part.headers.get("Content-Type"), name)
        partial = self.pending / f"{upload_id}.part"
        digest = hashlib.sha256()
        size = 0
        try:
            with partial.open("wb") as sink:
                while chunk := await part.read_chunk(CHUNK):
                    size += len(chunk)
                    if size > self.max_bytes:
                        return None
                    digest.update(chunk)
                    sink.write(chunk)
            if not part.at_eof():
                return _json_error(400, "malformed multipart body: the `file` part ends without its boundary "
                                        "(upload cut off?); send it again")
            if size == 0:
                return _json_error(400, "the uploaded file is empty")
            partial.rename(self.pending / f"{upload_id}.bin")
        finally:
            partial.unlink(missing_ok=True)
        meta = {"owner": owner, "name": name, "mime": mime, "size": size, "sha256": digest.hexdigest(),
                "created": time.time(), "consumed": False}
        self._write_json(self.pending / f"{upload_id}.json", meta)
        return web.json_response({"upload": upload_id, "name": name, "mime": mime, "size": size,
                                  "sha256": meta["sha256"]})

    async def claim(self, upload_id: str, owner: str) -> Attachment:
        """The attachment for an upload of `owner`, bytes included (also after it was sent once)."""
        meta = self._pending_meta(upload_id)
        if meta is None or meta.get("owner") != owner:
            raise UnknownUpload(upload_id)
        sources = [self.pending / f"{upload_id}.bin", self.files / meta["sha256"]]
        if meta.get("consumed"):
            sources.reverse()
        data = await asyncio.to_thread(self._read_first, sources)
        if data is None:
            raise UnknownUpload(upload_id)
        return Attachment.of(meta["name"], meta["mime"], data, platform_ref=upload_id)

    @staticmethod
    def _read_first(paths: list[Path]) -> bytes | None:
        """The bytes of the first path that exists (an upload may move while a second tab sends it)."""
        for path in paths:
            try:
                return path.read_bytes()
            except FileNotFoundError:
                continue
        return None

    def consume(self, upload_id: str, owner: str) -> None:
        """After the message naming it was journaled: move the bytes to the file store."""
        meta = self._pending_meta(upload_id)
        if meta is None or meta.get("consumed"):
            return
        blob = self.pending / f"{upload_id}.bin"
        target = self.files / meta["sha256"]
        if target.exists():
            blob.unlink(missing_ok=True)
        else:
            blob.replace(target)
        self.grant(meta["sha256"], owner, name=meta["name"], mime=meta["mime"])
        meta["consumed"] = True
        self._write_json(self.pending / f"{upload_id}.json", meta)

    async def keep(self, attachment: Attachment, reader: str) -> str | None:
        """Store a sent attachment's bytes by digest so `reader` can fetch it; None if no bytes."""
        sha = attachment.sha256
        if not _SHA256.match(sha or ""):
            if not attachment.data:
                return None
            sha = hashlib.sha256(attachment.data).hexdigest()
        target = self.files / sha
        if not target.exists():
            if not attachment.data or hashlib.sha256(attachment.data).hexdigest() != sha:
                return None
            await asyncio.to_thread(self._write_file, target, attachment.data)
        self.grant(sha, reader, name=clean_name(attachment.name), mime=clean_mime(attachment.mime, attachment.name))
        return sha

    @staticmethod
    def _write_file(target: Path, data: bytes) -> None:
        partial = target.with_name(f"{target.name}.{secrets.token_hex(4)}.part")
        partial.write_bytes(data)
        partial.replace(target)

    def grant(self, sha: str, reader: str, *, name: str, mime: str) -> None:
        meta_path = self.files / f"{sha}.json"
        meta = self._read_json(meta_path) or {"name": name, "mime": mime, "readers": []}
        if reader not in meta["readers"]:
            meta["readers"].append(reader)
            self._write_json(meta_path, meta)

    def lookup(self, sha: str, reader: str) -> StoredFile | None:
        if not _SHA256.match(sha):
            return None
        meta = self._read_json(self.files / f"{sha}.json")
        path = self.files / sha
        if meta is None or reader not in meta.get("readers", ()) or not path.exists():
            return None
        return StoredFile(path=path, name=meta["name"], mime=meta["mime"])

    async def serve(self, sha: str, reader: str) -> web.StreamResponse:
        """The file's bytes for a reader it was sent to; 404 for anyone else."""
        stored = self.lookup(sha, reader)
        if stored is None:
            return _json_error(404, "no such file for you")
        disposition = "inline" if stored.mime in _INLINE_MIME else "attachment"
        return web.FileResponse(stored.path, headers={
            "Content-Type": stored.mime,
            "Content-Disposition": f"{disposition}; filename*=UTF-8''{quote(stored.name)}",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "sandbox; default-src 'none'",
            "Cache-Control": "private, max-age=3600",
        })

    def _drop(self, transport: asyncio.BaseTransport) -> None:
        self._refused.discard(transport)
        transport.close()

    def drop_refused(self) -> None:
        """Close at once the connections of refused uploads still in their grace period."""
        for transport in list(self._refused):
            self._drop(transport)

    def prune(self, max_age: float = PENDING_MAX_AGE) -> int:
        """Remove unsent uploads older than `max_age` seconds; returns how many."""
        removed = 0
        cutoff = time.time() - max_age
        for meta_path in self.pending.glob("*.json"):
            meta = self._read_json(meta_path)
            if meta is None or meta.get("consumed") or meta.get("created", 0) >= cutoff:
                continue
            (self.pending / f"{meta_path.stem}.bin").unlink(missing_ok=True)
            meta_path.unlink(missing_ok=True)
            removed += 1
        for stale in self.pending.glob("*.part"):
            if stale.stat().st_mtime < cutoff:
                stale.unlink(missing_ok=True)
        return removed

    def _pending_meta(self, upload_id: str) -> dict | None:
        if not isinstance(upload_id, str) or not _UPLOAD_ID.match(upload_id):
            return None
        return self._read_json(self.pending / f"{upload_id}.json")

    @staticmethod
    def _read_json(path: Path) -> dict | None:
        try:
            return json.loads(path.read_text("utf-8"))
        except (FileNotFoundError, ValueError):
            return None

    @staticmethod
    def _write_json(path: Path, value: dict) -> None:
        partial = path.with_name(f"{path.name}.{secrets.token_hex(4)}.tmp")
        partial.write_text(json.dumps(value), "utf-8")
        os.replace(partial, path)

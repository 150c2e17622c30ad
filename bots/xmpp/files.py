"""Files over XMPP: HTTP File Upload (XEP-0363) out, bounded HTTP fetch of OOB URLs in.

Inbound URLs are fetched with the size limit checked against Content-Length before the
body is read and again while streaming, so an oversized or lying server costs at most
the limit plus one chunk; a refused file is still an attachment (with `refused` set).
"""

from __future__ import annotations

import asyncio
import mimetypes
import posixpath
from urllib.parse import unquote, urlsplit

import aiohttp

from relay.model import Attachment

CHUNK = 64 * 1024


def name_from_url(url: str) -> str:
    path = unquote(urlsplit(url).path)
    return posixpath.basename(path.rstrip("/")) or "file"


async def fetch(session: aiohttp.ClientSession, url: str, limit: int, timeout: float) -> Attachment:
    """Download `url` into an Attachment, refusing (not raising) past `limit` bytes or on error."""
    name = name_from_url(url)
    guessed = mimetypes.guess_type(name)[0] or "application/octet-stream"
    if urlsplit(url).scheme not in ("http", "https"):
        return Attachment(name, guessed, 0, platform_ref=url, refused="unsupported URL scheme")
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout), max_redirects=3) as resp:
            mime = (resp.headers.get("Content-Type") or guessed).split(";", 1)[0].strip() or guessed
            if resp.status != 200:
                return Attachment(name, mime, 0, platform_ref=url, refused=f"fetch failed: HTTP {resp.status}")
            declared = resp.content_length
            if declared is not None and declared > limit:
                return Attachment(
                    name, mime, declared, platform_ref=url, refused=f"too large: {declared} bytes > limit {limit}"
                )
            chunks: list[bytes] = []
            total = 0
            async for chunk in resp.content.iter_chunked(CHUNK):
                total += len(chunk)
                if total > limit:
                    return Attachment(
                        name, mime, total, platform_ref=url, refused=f"too large: over limit {limit} bytes"
                    )
                chunks.append(chunk)
            return Attachment.of(name, mime, b"".join(chunks), platform_ref=url)
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
        reason = str(exc) or type(exc).__name__
        return Attachment(name, guessed, 0, platform_ref=url, refused=f"fetch failed: {reason}")


class UploadRejected(Exception):
    """The upload service or its HTTP endpoint said no; `temporary` when worth retrying."""

    def __init__(self, reason: str, temporary: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.temporary = temporary


async def put(session: aiohttp.ClientSession, url: str, headers: dict[str, str], data: bytes, mime: str,
              timeout: float) -> None:
    """PUT the bytes to an XEP-0363 slot."""
    all_headers = {"Content-Type": mime, "Content-Length": str(len(data)), **headers}
    try:
        async with session.put(url, data=data, headers=all_headers,
                               timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            if resp.status >= 400:
                body = (await resp.text())[:200]
                raise UploadRejected(f"upload HTTP {resp.status}: {body}", temporary=resp.status >= 500)
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        raise UploadRejected(f"upload failed: {exc or type(exc).__name__}", temporary=True) from exc

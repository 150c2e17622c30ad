"""Files over XMPP: HTTP File Upload (XEP-0363) out, bounded HTTP fetch of OOB URLs in.

Inbound URLs are fetched only from allowed hosts (every redirect hop is checked too), so a
client cannot make relay request internal addresses (SSRF). The size limit is checked
against Content-Length before the body is read and again while streaming, so an oversized
or lying server costs at most the limit plus one chunk; a refused file is still an
attachment (with `refused` set).
"""

from __future__ import annotations

import asyncio
import logging
import mimetypes
import posixpath
from typing import Collection
from urllib.parse import unquote, urljoin, urlsplit

import aiohttp

from relay.model import Attachment

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
MAX_REDIRECTS = 3
REDIRECTS = frozenset({301, 302, 303, 307, 308})
DEFAULT_PORTS = {"http": 80, "https": 443}


def host_entry(entry: str) -> str:
    """Normalise a `fetch_hosts` entry (`host` or `host:port`) to `host` or `host:port`;
    ValueError when it is neither."""
    text = entry.strip()
    parts = urlsplit(f"//{text}")
    host = parts.hostname
    port = parts.port
    if not text or not host or parts.username or parts.password or parts.path or parts.query or parts.fragment:
        raise ValueError(f"{entry!r} is not a host or host:port")
    return f"{_bracket(host)}:{port}" if port is not None else _bracket(host)


def url_host(url: str) -> str:
    """`host:port` of an http(s) URL, the port made explicit; ValueError for a bad URL."""
    parts = urlsplit(url)
    host = parts.hostname
    if not host:
        raise ValueError("URL without a host")
    port = parts.port or DEFAULT_PORTS[parts.scheme]
    return f"{_bracket(host)}:{port}"


def host_allowed(url: str, allowed: Collection[str]) -> bool:
    """An entry `host:port` allows exactly that port; a bare `host` only the scheme's default port."""
    scheme = urlsplit(url).scheme
    key = url_host(url)
    host, _, port = key.rpartition(":")
    return key in allowed or (int(port) == DEFAULT_PORTS[scheme] and host in allowed)


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _refusal(url: str, allowed: Collection[str]) -> str:
    """Why `url` may not be fetched, or "" when it may. The reason travels with the message (a
    recipient may see it), so the allowlist itself is only logged."""
    if urlsplit(url).scheme not in ("http", "https"):
        return "unsupported URL scheme"
    try:
        if host_allowed(url, allowed):
            return ""
        shown = url_host(url)
    except ValueError as exc:
        return f"bad URL: {exc}"
    log.warning("not fetching a file from host %s: not in fetch_hosts (allowed: %s)", shown,
                ", ".join(sorted(allowed)) or "none")
    return f"host not allowed: {shown}"


def name_from_url(url: str) -> str:
    path = unquote(urlsplit(url).path)
    return posixpath.basename(path.rstrip("/")) or "file"


async def fetch(session: aiohttp.ClientSession, url: str, limit: int, timeout: float,
                allowed: Collection[str]) -> Attachment:
    """Download `url` into an Attachment, refusing (not raising) a host outside `allowed`
    (see `host_allowed`), past `limit` bytes or on error."""
    name = name_from_url(url)
    guessed = mimetypes.guess_type(name)[0] or "application/octet-stream"
    refused = _refusal(url, allowed)
    if refused:
        return Attachment(name, guessed, 0, platform_ref=url, refused=refused)
    try:
        async with asyncio.timeout(timeout):
            return await _download(session, url, name, guessed, limit, allowed)
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
        reason = str(exc) or type(exc).__name__
        return Attachment(name, guessed, 0, platform_ref=url, refused=f"fetch failed: {reason}")


async def _download(session: aiohttp.ClientSession, url: str, name: str, guessed: str, limit: int,
                    allowed: Collection[str]) -> Attachment:
    """Follow up to MAX_REDIRECTS redirects, each target checked against `allowed`, then read."""
    target = url
    for _ in range(MAX_REDIRECTS + 1):
        async with session.get(target, allow_redirects=False) as resp:
            if resp.status in REDIRECTS and resp.headers.get("Location"):
                target = urljoin(target, resp.headers["Location"])
                refused = _refusal(target, allowed)
                if refused:
                    return Attachment(name, guessed, 0, platform_ref=url, refused=f"redirect refused: {refused}")
                continue
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
    return Attachment(name, guessed, 0, platform_ref=url, refused=f"fetch failed: more than {MAX_REDIRECTS} redirects")


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

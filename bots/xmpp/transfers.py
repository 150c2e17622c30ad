"""Files over XMPP as the channel uses them: finding the HTTP File Upload service (XEP-0363),
requesting slots, uploading outgoing attachments, and fetching incoming OOB URLs from the
allowed hosts only (the HTTP itself, bounded, is bots/xmpp/files.py)."""

from __future__ import annotations

import asyncio
import logging
import mimetypes
import xml.etree.ElementTree as ET

import aiohttp
from slixmpp.basexmpp import BaseXMPP
from slixmpp.exceptions import IqError, IqTimeout

from bots.base import Permanent, Retryable
from bots.xmpp import files
from bots.xmpp.host import Host
from bots.xmpp.stanzas import DISCO_INFO, DISCO_ITEMS, NS_UPLOAD, Slot, parse_slot, q, slot_request
from relay.model import Attachment, Outgoing

log = logging.getLogger(__name__)


class Transfers:
    """The upload service of one channel (found once, or `upload_service`) and its HTTP session."""

    def __init__(self, host: Host) -> None:
        self.host = host
        settings = host.settings
        self._session: aiohttp.ClientSession | None = None
        self._upload_target: tuple[str, int | None] | None = (
            (settings.upload_service, None) if settings.upload_service else None
        )
        self._upload_http_host: str | None = None
        self._probe_lock = asyncio.Lock()

    def open(self) -> None:
        self._session = aiohttp.ClientSession()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def fetch_all(self, urls: tuple[str, ...], limit: int) -> tuple[Attachment, ...]:
        """Each OOB URL as an attachment (refused ones included), within `limit` bytes each."""
        if not urls:
            return ()
        assert self._session is not None
        allowed = await self._fetch_allowlist()
        return tuple(
            [await files.fetch(self._session, url, limit, self.host.settings.fetch_timeout, allowed) for url in urls]
        )

    async def _fetch_allowlist(self) -> frozenset[str]:
        """`fetch_hosts` when set, else the upload service's GET host (empty while unknown)."""
        if self.host.settings.fetch_hosts is not None:
            return frozenset(self.host.settings.fetch_hosts)
        async with self._probe_lock:
            if self._upload_http_host is None and self.host.link.online:
                try:
                    await self._request_slot(self.host.link.current(), "relay-probe.txt", 1, "text/plain")
                except (Permanent, Retryable) as exc:
                    log.warning("xmpp %s: upload service host unknown, incoming files refused: %s", self.host.name, exc)
        return frozenset({self._upload_http_host} if self._upload_http_host else ())

    async def upload_all(self, out: Outgoing) -> tuple[list[tuple[str, str]], list[str]]:
        """Upload every attachment that has bytes; name the others in a note, never drop them."""
        uploads: list[tuple[str, str]] = []
        notes: list[str] = []
        for att in out.attachments:
            if att.data:
                uploads.append((await self._upload(att), att.name))
            else:
                notes.append(f"[file {att.name} not delivered: {att.refused or 'content not available'}]")
        return uploads, notes

    async def _upload(self, att: Attachment) -> str:
        xmpp = self.host.link.current()
        _, max_size = await self._upload_service(xmpp)
        if max_size is not None and att.size > max_size:
            raise Permanent(f"file {att.name} is {att.size} bytes; the upload service accepts {max_size}")
        name = att.name.replace("/", "_") or "file"
        mime = att.mime or mimetypes.guess_type(name)[0] or "application/octet-stream"
        slot = await self._request_slot(xmpp, name, len(att.data), mime)
        assert self._session is not None
        try:
            await files.put(self._session, slot.put_url, slot.headers, att.data, mime, self.host.settings.fetch_timeout)
        except files.UploadRejected as exc:
            raise (Retryable(exc.reason) if exc.temporary else Permanent(exc.reason)) from None
        return slot.get_url

    async def _request_slot(self, xmpp: BaseXMPP, name: str, size: int, mime: str) -> Slot:
        """An upload slot; its GET URL's host becomes the default fetch allowlist.

        With no `fetch_hosts` and no upload yet, a slot for a 1-byte file is requested just to
        learn that host (never used; the server expires it)."""
        service, _ = await self._upload_service(xmpp)
        iq = xmpp.make_iq_get(ito=service, ifrom=self.host.settings.jid if self.host.staff else None)
        iq.xml.append(slot_request(name, size, mime))
        try:
            result = await iq.send(timeout=self.host.settings.send_timeout)
        except IqTimeout:
            raise Retryable("upload slot request timed out") from None
        except IqError as exc:
            condition = exc.iq["error"]["condition"]
            text = exc.iq["error"]["text"]
            if condition in ("resource-constraint", "internal-server-error", "service-unavailable"):
                raise Retryable(f"upload slot refused: {condition} {text}".strip()) from None
            raise Permanent(f"upload slot refused for {name}: {condition} {text}".strip()) from None
        slot = parse_slot(result.xml)
        try:
            self._upload_http_host = files.url_host(slot.get_url)
        except (ValueError, KeyError):
            log.warning("xmpp %s: upload slot GET URL %r has no usable host", self.host.name, slot.get_url)
        return slot

    async def _upload_service(self, xmpp: BaseXMPP) -> tuple[str, int | None]:
        if self._upload_target is not None:
            return self._upload_target
        ifrom = self.host.settings.jid if self.host.staff else None
        domain = self.host.settings.domain
        try:
            items = await xmpp.make_iq_get(DISCO_ITEMS, ito=domain, ifrom=ifrom).send(
                timeout=self.host.settings.send_timeout)
            candidates = [domain] + [
                item.get("jid", "") for item in items.xml.iter(q(DISCO_ITEMS, "item")) if item.get("jid")
            ]
            for jid in candidates:
                try:
                    info = await xmpp.make_iq_get(DISCO_INFO, ito=jid, ifrom=ifrom).send(
                        timeout=self.host.settings.send_timeout)
                except IqError:
                    continue
                features = {f.get("var") for f in info.xml.iter(q(DISCO_INFO, "feature"))}
                if NS_UPLOAD not in features:
                    continue
                self._upload_target = (jid, _max_file_size(info.xml))
                return self._upload_target
        except IqTimeout:
            raise Retryable("upload service discovery timed out") from None
        except IqError as exc:
            raise Retryable(f"upload service discovery failed: {exc.iq['error']['condition']}") from None
        raise Permanent(f"no HTTP File Upload service found on {domain} (set upload_service)")


def _max_file_size(info: ET.Element) -> int | None:
    for form in info.iter("{jabber:x:data}x"):
        fields = {f.get("var"): f.findtext("{jabber:x:data}value") for f in form.iter("{jabber:x:data}field")}
        if fields.get("FORM_TYPE") == NS_UPLOAD and fields.get("max-file-size"):
            try:
                return int(fields["max-file-size"] or "")
            except ValueError:
                return None
    return None

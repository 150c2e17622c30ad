"""Witnesses: copies of each signed checkpoint kept outside the journal's reach.

A tail cut together with its checkpoint files, or a rewrite after the last local checkpoint,
leaves the journal consistent with itself; a witness that holds the checkpoint (another
directory or mount, a syslog server, an HTTP endpoint) or an RFC 3161 timestamp of it shows
the difference. Each checkpoint goes to every configured witness at once, after it commits;
one that fails is retried with the next checkpoint, and its failure is logged and counted.
`relay journal verify --witness` reads the records back (`read()`) and checks them against the
chain.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from relay.journal import checkpoints, tsa
from relay.journal.blobs import write_durably

log = logging.getLogger("relay.journal.witness")
MAX_READ_BYTES = 64 * 1024 * 1024
"""What `read()` accepts from one witness (a directory's files, an HTTP answer, a log file)."""
TIMEOUT = 15.0
SYSLOG_TAG = "relay-checkpoint"
FIELDS = ("seq", "hash", "ts", "upto_seq", "head_hash", "public_key", "signature")


class WitnessError(Exception):
    """A witness block that cannot be used, or a witness that cannot be read; names which."""


def record_of(record: Mapping[str, Any]) -> dict[str, Any]:
    """What a witness holds: the signed head and the checkpoint event's own seq, hash and ts."""
    return {k: record[k] for k in FIELDS if k in record}


def imprint(record: Mapping[str, Any]) -> bytes:
    """The digest a timestamp authority signs: SHA-256 of the canonical witness record."""
    body = {k: record[k] for k in ("seq", "hash", "upto_seq", "head_hash") if k in record}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).digest()


class Witness(Protocol):
    name: str

    async def publish(self, record: dict[str, Any], checkpoint_dir: Path) -> None:
        """Hand the record to the witness; raises on failure (it is retried with the next one)."""
        ...

    async def read(self) -> list[dict[str, Any]]:
        """The records the witness holds (empty for a write-only witness)."""
        ...


class DirectoryWitness:
    """`checkpoint-<seq>.json` files in a directory on another disk or mount (0700, files 0600)."""

    def __init__(self, name: str, path: Path) -> None:
        self.name, self.path = name, path

    def _write(self, record: dict[str, Any]) -> None:
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_durably(self.path / checkpoints.file_name(int(record["seq"])),
                      json.dumps(record_of(record), sort_keys=True).encode(), mode=0o600)

    async def publish(self, record: dict[str, Any], checkpoint_dir: Path) -> None:
        await asyncio.to_thread(self._write, record)

    async def read(self) -> list[dict[str, Any]]:
        if not self.path.is_dir():
            raise WitnessError(f"witness {self.name}: no directory {self.path}")
        return [r for _, r in await asyncio.to_thread(checkpoints.read_all, self.path)]


class SyslogWitness:
    """One RFC 5424 line per checkpoint, `relay-checkpoint {json}`, over UDP (`host:port`) or a
    Unix socket path (`/dev/log`). `read_from` names the file the syslog server writes, for verify."""

    def __init__(self, name: str, address: str, facility: int = 16, read_from: Path | None = None) -> None:
        self.name, self.address, self.facility, self.read_from = name, address, facility, read_from

    def _send(self, line: bytes) -> None:
        if self.address.startswith("/"):
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
                s.sendto(line, self.address)
            return
        host, _, port = self.address.rpartition(":")
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(line, (host.strip("[]"), int(port)))

    async def publish(self, record: dict[str, Any], checkpoint_dir: Path) -> None:
        pri = self.facility * 8 + 5  # notice
        payload = json.dumps(record_of(record), sort_keys=True, separators=(",", ":"))
        line = f"<{pri}>1 - {socket.gethostname()} relay - {SYSLOG_TAG} - {payload}".encode()
        await asyncio.to_thread(self._send, line)

    async def read(self) -> list[dict[str, Any]]:
        if self.read_from is None:
            return []
        return await asyncio.to_thread(self._read_file, self.read_from)

    def _read_file(self, path: Path) -> list[dict[str, Any]]:
        try:
            size = path.stat().st_size
            if size > MAX_READ_BYTES:
                raise WitnessError(f"witness {self.name}: {path} is {size} bytes, over {MAX_READ_BYTES}")
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise WitnessError(f"witness {self.name}: cannot read {path}: {exc}") from None
        out: list[dict[str, Any]] = []
        for line in text.splitlines():
            _, marker, payload = line.partition(f" {SYSLOG_TAG} - ")
            if not marker:
                continue
            try:
                doc = json.loads(payload)
            except ValueError:
                continue
            if isinstance(doc, dict):
                out.append(doc)
        return out


class HttpWitness:
    """POST each record as JSON to `url` (2xx = kept); GET `url` answers the JSON list it holds."""

    def __init__(self, name: str, url: str, token: str | None = None) -> None:
        self.name, self.url, self.token = name, url, token

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    async def publish(self, record: dict[str, Any], checkpoint_dir: Path) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as session:
            async with session.post(self.url, json=record_of(record), headers=self._headers()) as resp:
                if resp.status // 100 != 2:
                    raise WitnessError(f"witness {self.name}: {self.url} answered HTTP {resp.status}")

    async def read(self) -> list[dict[str, Any]]:
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as session:
                async with session.get(self.url, headers=self._headers()) as resp:
                    if resp.status != 200:
                        raise WitnessError(f"witness {self.name}: GET {self.url} answered HTTP {resp.status}")
                    data = await resp.content.read(MAX_READ_BYTES + 1)
        except aiohttp.ClientError as exc:
            raise WitnessError(f"witness {self.name}: cannot read {self.url}: {exc}") from None
        if len(data) > MAX_READ_BYTES:
            raise WitnessError(f"witness {self.name}: answer from {self.url} is over {MAX_READ_BYTES} bytes")
        try:
            doc = json.loads(data)
        except ValueError:
            raise WitnessError(f"witness {self.name}: {self.url} did not answer a JSON list") from None
        if not isinstance(doc, list):
            raise WitnessError(f"witness {self.name}: {self.url} did not answer a JSON list")
        return [r for r in doc if isinstance(r, dict)]


class TsaWitness:
    """An RFC 3161 timestamp of each checkpoint; the reply is kept next to the checkpoint file
    as `checkpoint-<seq>.tsr` and checked by verify with `openssl ts -verify` against `ca_file`."""

    def __init__(self, name: str, url: str, ca_file: Path | None = None, untrusted: Path | None = None) -> None:
        self.name, self.url, self.ca_file, self.untrusted = name, url, ca_file, untrusted

    async def publish(self, record: dict[str, Any], checkpoint_dir: Path) -> None:
        query = tsa.request(imprint(record), nonce=int.from_bytes(os.urandom(8), "big"))
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as session:
            async with session.post(self.url, data=query,
                                    headers={"Content-Type": "application/timestamp-query"}) as resp:
                body = await resp.content.read(tsa.MAX_REPLY_BYTES + 1)
                if resp.status != 200:
                    raise WitnessError(f"witness {self.name}: {self.url} answered HTTP {resp.status}")
        if len(body) > tsa.MAX_REPLY_BYTES:
            raise WitnessError(f"witness {self.name}: reply over {tsa.MAX_REPLY_BYTES} bytes")
        status = tsa.reply_status(body)
        if status not in (0, 1):
            raise WitnessError(f"witness {self.name}: the TSA refused the request (PKIStatus {status})")
        path = checkpoint_dir / tsa.token_name(int(record["seq"]))
        await asyncio.to_thread(write_durably, path, body, 0o600)

    async def read(self) -> list[dict[str, Any]]:
        return []


def from_config(blocks: Any, base: Path, where: str = "journal.witnesses") -> list[Witness]:
    """`journal.witnesses:` (a list of `{type: directory|syslog|http|tsa, …}`) → witnesses."""
    if blocks is None:
        return []
    if not isinstance(blocks, list):
        raise WitnessError(f"{where} must be a list")
    out: list[Witness] = []
    names: set[str] = set()

    def path(value: Any) -> Path:
        p = Path(str(value)).expanduser()
        return p if p.is_absolute() else (base / p).resolve()

    for i, block in enumerate(blocks):
        at = f"{where}[{i}]"
        if not isinstance(block, dict) or "type" not in block:
            raise WitnessError(f"{at}: a mapping with type: directory | syslog | http | tsa")
        kind = block["type"]
        name = str(block.get("name") or f"{kind}-{i}")
        if name in names:
            raise WitnessError(f"{at}: a second witness named {name!r}")
        names.add(name)
        try:
            if kind == "directory":
                out.append(DirectoryWitness(name, path(block["path"])))
            elif kind == "syslog":
                out.append(SyslogWitness(name, str(block.get("address", "/dev/log")), int(block.get("facility", 16)),
                                         path(block["read_from"]) if block.get("read_from") else None))
            elif kind == "http":
                out.append(HttpWitness(name, str(block["url"]), block.get("token")))
            elif kind == "tsa":
                out.append(TsaWitness(name, str(block["url"]), path(block["ca_file"]) if block.get("ca_file") else None,
                                      path(block["untrusted"]) if block.get("untrusted") else None))
            else:
                raise WitnessError(f"{at}: unknown type {kind!r} (directory, syslog, http, tsa)")
        except KeyError as exc:
            raise WitnessError(f"{at}: {kind} witness needs {exc.args[0]}") from None
        except (TypeError, ValueError) as exc:
            raise WitnessError(f"{at}: {exc}") from None
    return out


def ad_hoc(spec: str, base: Path) -> Witness:
    """`--witness DIR|URL|syslog-file:PATH` on the command line."""
    if spec.startswith(("http://", "https://")):
        return HttpWitness(spec, spec)
    if spec.startswith("syslog-file:"):
        return SyslogWitness(spec, "", read_from=Path(spec[len("syslog-file:"):]))
    p = Path(spec).expanduser()
    return DirectoryWitness(spec, p if p.is_absolute() else (base / p).resolve())


async def publish_all(witnesses: Sequence[Witness], pending: dict[str, list[dict[str, Any]]],
                      record: dict[str, Any], checkpoint_dir: Path) -> list[str]:
    """Every witness at once: first what it missed before, then `record`. Returns the failures
    as lines (witness, seq, why); what failed stays in `pending` for the next checkpoint."""

    async def one(w: Witness) -> str | None:
        queue = pending.setdefault(w.name, [])
        queue.append(record)
        while queue:
            try:
                await asyncio.wait_for(w.publish(queue[0], checkpoint_dir), TIMEOUT * 2)
            except Exception as exc:  # any failure: kept for the next round, reported
                return f"witness {w.name}: checkpoint seq {queue[0].get('seq')} not kept: {exc!r}"
            queue.pop(0)
        return None

    results = await asyncio.gather(*(one(w) for w in witnesses))
    return [r for r in results if r]

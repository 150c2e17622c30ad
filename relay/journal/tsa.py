"""RFC 3161 timestamps: the request relay sends, the reply status it reads, the check verify runs.

The request is a few fixed DER structures, built here rather than adding an ASN.1 library;
checking a reply's CMS signature is left to `openssl ts -verify`, the reference tool, so verify
needs the `openssl` command (any 1.1 or 3.x).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

MAX_REPLY_BYTES = 256 * 1024
_SHA256_OID = bytes.fromhex("0609608648016503040201")


def token_name(seq: int) -> str:
    return f"checkpoint-{seq:012d}.tsr"


def _tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        length = bytes([n])
    else:
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(raw)]) + raw
    return bytes([tag]) + length + content


def _integer(value: int) -> bytes:
    raw = value.to_bytes(max(1, (value.bit_length() + 8) // 8), "big", signed=True)
    return _tlv(0x02, raw)


def request(digest: bytes, nonce: int) -> bytes:
    """TimeStampReq {version 1, messageImprint {sha256, digest}, nonce, certReq TRUE}."""
    if len(digest) != 32:
        raise ValueError("a SHA-256 digest is 32 bytes")
    algorithm = _tlv(0x30, _SHA256_OID + b"\x05\x00")
    imprint = _tlv(0x30, algorithm + _tlv(0x04, digest))
    return _tlv(0x30, _integer(1) + imprint + _integer(nonce) + b"\x01\x01\xff")


def _read(data: bytes, at: int) -> tuple[int, int, int]:
    """(tag, start of content, end of content) of the DER element at `at`."""
    if at + 2 > len(data):
        raise ValueError("truncated DER")
    tag, first = data[at], data[at + 1]
    at += 2
    if first < 0x80:
        length = first
    else:
        k = first & 0x7F
        if k == 0 or k > 4 or at + k > len(data):
            raise ValueError("bad DER length")
        length = int.from_bytes(data[at:at + k], "big")
        at += k
    if at + length > len(data):
        raise ValueError("truncated DER")
    return tag, at, at + length


def reply_status(reply: bytes) -> int:
    """PKIStatus of a TimeStampResp (0 granted, 1 granted with mods, 2+ refused); -1 if unreadable."""
    try:
        tag, start, _ = _read(reply, 0)
        if tag != 0x30:
            return -1
        tag, start, _ = _read(reply, start)        # PKIStatusInfo
        if tag != 0x30:
            return -1
        tag, s, e = _read(reply, start)            # status INTEGER
        if tag != 0x02:
            return -1
        return int.from_bytes(reply[s:e], "big", signed=True)
    except ValueError:
        return -1


async def verify(reply: Path, digest: bytes, ca_file: Path, untrusted: Path | None = None) -> str | None:
    """None when `openssl ts -verify` accepts `reply` for `digest` under `ca_file`; else why not."""
    args = ["openssl", "ts", "-verify", "-digest", digest.hex(), "-in", str(reply), "-CAfile", str(ca_file)]
    if untrusted is not None:
        args += ["-untrusted", str(untrusted)]
    try:
        proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE)
    except FileNotFoundError:
        return "the openssl command is not installed (needed to check RFC 3161 timestamps)"
    out, err = await proc.communicate()
    if proc.returncode == 0 and b"Verification: OK" in out:
        return None
    lines = (err or out).decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else f"openssl exited {proc.returncode}"

"""Loading the journal's Ed25519 keys in whichever encoding they were stored.

The journal writes the key; the evidence code only reads it, so it accepts PEM (PKCS#8 /
SubjectPublicKeyInfo), raw 32-byte keys and hex text rather than guessing one format.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


class KeyError_(ValueError):
    """A key file that is missing or not an Ed25519 key; the message names the file."""


def _raw_or_hex(data: bytes) -> bytes | None:
    if len(data) == 32:
        return data
    text = data.strip()
    try:
        raw = bytes.fromhex(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return None
    return raw if len(raw) == 32 else None


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyError_(f"{path}: cannot read the journal signing key: {exc.strerror or exc}") from exc
    if b"-----BEGIN" in data:
        key = serialization.load_pem_private_key(data, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyError_(f"{path}: not an Ed25519 private key")
        return key
    raw = _raw_or_hex(data)
    if raw is None:
        raise KeyError_(f"{path}: not an Ed25519 private key (expected PEM, 32 raw bytes or 64 hex digits)")
    return Ed25519PrivateKey.from_private_bytes(raw)


def public_key_from_text(text: str) -> Ed25519PublicKey:
    """A public key given as hex (raw 32 bytes) or as a PEM block."""
    data = text.strip().encode()
    if b"-----BEGIN" in data:
        key = serialization.load_pem_public_key(data)
        if not isinstance(key, Ed25519PublicKey):
            raise KeyError_("not an Ed25519 public key")
        return key
    raw = _raw_or_hex(data)
    if raw is None:
        raise KeyError_("not an Ed25519 public key (expected PEM or 64 hex digits)")
    return Ed25519PublicKey.from_public_bytes(raw)


def load_public_key(path_or_hex: str) -> Ed25519PublicKey:
    """`--public-key` may name a file or be the hex key itself."""
    p = Path(path_or_hex)
    if len(path_or_hex) != 64 or p.exists():
        try:
            data = p.read_bytes()
        except OSError as exc:
            raise KeyError_(f"{p}: cannot read the public key: {exc.strerror or exc}") from exc
        if len(data) == 32:
            return Ed25519PublicKey.from_public_bytes(data)
        try:
            return public_key_from_text(data.decode("ascii"))
        except (UnicodeDecodeError, KeyError_) as exc:
            raise KeyError_(f"{p}: {exc}") from exc
    return public_key_from_text(path_or_hex)


def public_hex(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()

"""The journal's Ed25519 key pair: made on first open, signs checkpoint heads `f"{upto_seq}:{head_hash}"`."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from relay.private_files import private_dir, write_private

KEY_NAME = "journal_ed25519"


def checkpoint_message(upto_seq: int, head_hash: str) -> bytes:
    return f"{upto_seq}:{head_hash}".encode()


def load_or_create(keys_dir: Path) -> Ed25519PrivateKey:
    """Read `keys/journal_ed25519` (PEM, 0600), creating it and its `.pub` on first use."""
    private_path = keys_dir / KEY_NAME
    if private_path.exists():
        key = serialization.load_pem_private_key(private_path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{private_path}: not an Ed25519 private key")
        return key
    private_dir(keys_dir)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
        f.flush()
        os.fsync(f.fileno())
    pub = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    write_private(keys_dir / f"{KEY_NAME}.pub", pub)
    return key


def load_public(keys_dir: Path) -> str | None:
    """The journal's public key as raw hex (as checkpoints carry it), or None if none was made."""
    path = keys_dir / f"{KEY_NAME}.pub"
    if not path.exists():
        return None
    key = serialization.load_pem_public_key(path.read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path}: not an Ed25519 public key")
    return public_hex(key)


def public_hex(key: Ed25519PublicKey) -> str:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()


def sign_checkpoint(key: Ed25519PrivateKey, upto_seq: int, head_hash: str) -> dict[str, object]:
    return {
        "upto_seq": upto_seq,
        "head_hash": head_hash,
        "public_key": public_hex(key.public_key()),
        "signature": key.sign(checkpoint_message(upto_seq, head_hash)).hex(),
    }


def signature_ok(body: dict[str, object]) -> bool:
    """True when `signature` is a valid Ed25519 signature of the head by `public_key`."""
    try:
        key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(str(body["public_key"])))
        key.verify(
            bytes.fromhex(str(body["signature"])),
            checkpoint_message(int(body["upto_seq"]), str(body["head_hash"])),  # type: ignore[call-overload]
        )
    except (InvalidSignature, KeyError, ValueError, TypeError):
        return False
    return True

"""WeChat's message signatures and the safe mode's AES envelope (`EncodingAESKey`).

Key = base64(EncodingAESKey + "="), IV = key[:16], AES-256-CBC with PKCS#7 padding to 32-byte
blocks; the plaintext is 16 random bytes, a 4-byte big-endian length, the XML, the app id.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import struct

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

BLOCK = 32


class CryptoError(ValueError):
    """An envelope that does not decrypt to a message for this app."""


def sha1_signature(*parts: str) -> str:
    """`sha1(''.join(sorted(parts)))`, the signature over token, timestamp, nonce (and Encrypt)."""
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()


def signature_matches(expected: str, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(expected.encode(), (given or "").strip().lower().encode())


class WeChatCrypto:
    """Decrypts pushes and encrypts replies for one Official Account in safe mode."""

    def __init__(self, encoding_aes_key: str, app_id: str) -> None:
        if len(encoding_aes_key) != 43:
            raise ValueError("encoding_aes_key must be the 43 characters shown in the WeChat console")
        try:
            self.key = base64.b64decode(encoding_aes_key + "=", validate=True)
        except binascii.Error as exc:
            raise ValueError(f"encoding_aes_key is not valid base64: {exc}") from None
        self.app_id = app_id

    def _cipher(self) -> Cipher[modes.CBC]:
        return Cipher(algorithms.AES(self.key), modes.CBC(self.key[:16]))

    def decrypt(self, encrypted: str) -> bytes:
        """The XML inside `Encrypt`; raises CryptoError for anything but this app's message."""
        try:
            data = base64.b64decode(encrypted, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise CryptoError(f"Encrypt is not base64: {exc}") from None
        if not data or len(data) % 16:
            raise CryptoError("Encrypt is not a whole number of AES blocks")
        decryptor = self._cipher().decryptor()
        plain = decryptor.update(data) + decryptor.finalize()
        pad = plain[-1]
        if not 1 <= pad <= BLOCK or plain[-pad:] != bytes([pad]) * pad:
            raise CryptoError("bad padding (wrong EncodingAESKey?)")
        plain = plain[:-pad]
        if len(plain) < 20:
            raise CryptoError("plaintext too short")
        (length,) = struct.unpack(">I", plain[16:20])
        xml, app_id = plain[20:20 + length], plain[20 + length:]
        if len(xml) != length:
            raise CryptoError("length field past the end of the plaintext")
        if app_id.decode("utf-8", "replace") != self.app_id:
            raise CryptoError("message is for another app id")
        return xml

    def encrypt(self, xml: bytes, random_prefix: bytes | None = None) -> str:
        prefix = random_prefix if random_prefix is not None else os.urandom(16)
        if len(prefix) != 16:
            raise ValueError("random prefix must be 16 bytes")
        plain = prefix + struct.pack(">I", len(xml)) + xml + self.app_id.encode()
        pad = BLOCK - len(plain) % BLOCK
        plain += bytes([pad]) * pad
        encryptor = self._cipher().encryptor()
        return base64.b64encode(encryptor.update(plain) + encryptor.finalize()).decode()

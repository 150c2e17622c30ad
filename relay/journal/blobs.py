"""Content-addressed blob store: `<root>/<sha[:2]>/<sha>`, durable (fsynced) before anything names it."""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from pathlib import Path

from relay.private_files import FILE_MODE, private_dir

_SHA = re.compile(r"^[0-9a-f]{64}$")


def is_sha256(value: object) -> bool:
    return isinstance(value, str) and bool(_SHA.match(value))


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(path: Path, data: bytes, mode: int = FILE_MODE) -> None:
    """Temp file, fsync, rename, fsync the directory: the file is whole or absent after a crash."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


class BlobStore:
    """Blocking file operations; the journal calls them from a worker thread."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, sha: str) -> Path:
        if not is_sha256(sha):
            raise ValueError(f"not a sha256 hex digest: {sha!r}")
        return self.root / sha[:2] / sha

    def put(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        path = self.path(sha)
        try:
            if path.stat().st_size == len(data):
                return sha
        except FileNotFoundError:
            pass
        if not path.parent.is_dir():
            if not self.root.is_dir():
                private_dir(self.root)
                fsync_dir(self.root.parent)
            private_dir(path.parent)
            fsync_dir(self.root)
        write_durably(path, data)
        return sha

    def get(self, sha: str) -> bytes | None:
        try:
            return self.path(sha).read_bytes()
        except (FileNotFoundError, ValueError):
            return None

    def check(self, sha: str) -> str | None:
        """None when the blob is intact, else `blob missing` or `blob changed`."""
        try:
            actual = file_sha256(self.path(sha))
        except (FileNotFoundError, ValueError):
            return "blob missing"
        return None if actual == sha else "blob changed"

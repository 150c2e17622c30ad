"""The files of an export, digested as they are written.

The manifest lists the SHA-256 of every file; hashing each chunk on its way to disk means a
large export is never read back (nor held) to sign it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from relay.private_files import open_private, private_dir


class HashingWriter:
    """A binary file that feeds every chunk it writes to SHA-256; its digest is recorded on close."""

    def __init__(self, outputs: Outputs, rel: str) -> None:
        self._outputs = outputs
        self._rel = rel
        target = os.path.join(outputs.base, rel)  # not pathlib: it interns every path part for good
        folder = os.path.dirname(target)
        if folder not in outputs.folders:
            private_dir(Path(folder))
            outputs.folders.add(folder)
        self._fh = os.fdopen(open_private(target, os.O_WRONLY | os.O_TRUNC), "wb")
        self._hash = hashlib.sha256()

    def write(self, data: bytes) -> None:
        self._hash.update(data)
        self._fh.write(data)

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()
            self._outputs.digests[self._rel] = self._hash.hexdigest()

    def __enter__(self) -> HashingWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Outputs:
    """Writes files under `root` by POSIX relative path and remembers each one's SHA-256."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.base = str(root)
        self.folders: set[str] = set()
        self.digests: dict[str, str] = {}

    def open(self, rel: str) -> HashingWriter:
        return HashingWriter(self, rel)

    def write(self, rel: str, data: bytes) -> None:
        """The whole file at once (rewriting a path replaces its digest, as it replaces the file)."""
        with self.open(rel) as fh:
            fh.write(data)

    def has(self, rel: str) -> bool:
        return rel in self.digests

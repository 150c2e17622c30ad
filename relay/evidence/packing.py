"""The export as one zip (for a regulator's upload form or a single file on a disk), and its
safe unpacking for `verify --export X.zip`: bounded size and count, no path outside the root."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path, PurePosixPath

MAX_UNPACKED = 64 * 1024 ** 3
MAX_FILES = 5_000_000


class ZipError(ValueError):
    """The zip cannot be unpacked safely; the message says why."""


def pack_zip(directory: Path) -> Path:
    """`<directory>.zip` holding the export under its folder name (ZIP64, deflated)."""
    target = directory.with_name(directory.name + ".zip")
    if target.exists():
        raise ZipError(f"{target} exists; move it away or export into a new directory")
    tmp = target.with_name(f".{target.name}.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as z:
        for root, dirs, files in os.walk(directory):
            dirs.sort()
            for name in sorted(files):
                path = Path(root) / name
                z.write(path, str(PurePosixPath(directory.name) / path.relative_to(directory).as_posix()))
    os.chmod(tmp, 0o600)
    os.replace(tmp, target)
    return target


def unpack_zip(archive: Path, into: Path) -> Path:
    """Unpacks into `into` and returns the export's folder (the zip's one top folder)."""
    try:
        z = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as exc:
        raise ZipError(f"{archive}: not a zip file ({exc})") from None
    with z:
        infos = z.infolist()
        if len(infos) > MAX_FILES or sum(i.file_size for i in infos) > MAX_UNPACKED:
            raise ZipError(f"{archive}: more than {MAX_FILES} files or {MAX_UNPACKED} bytes unpacked")
        tops = set()
        for info in infos:
            parts = PurePosixPath(info.filename).parts
            if not parts or info.filename.startswith("/") or ".." in parts:
                raise ZipError(f"{archive}: member {info.filename!r} points outside the export")
            tops.add(parts[0])
        if len(tops) != 1:
            raise ZipError(f"{archive}: expected one top folder (the export), found {len(tops)}")
        z.extractall(into)
    return into / tops.pop()

"""Record files readable by the relay's user only: 0700 directories, 0600 files.

The journal, its blobs, keys, checkpoints and exports hold every message in original form; a
umask of 022 would let any local user read them, so they are created private whatever the umask,
and an existing data directory left open by an earlier version is tightened on open.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600

log = logging.getLogger("relay.private_files")


def private_dir(path: Path) -> Path:
    """`path` and any missing parent, created 0700 (an existing directory is left as it is)."""
    missing: list[Path] = []
    p = path
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=DIR_MODE)
        except FileExistsError:
            continue
        os.chmod(d, DIR_MODE)  # mkdir's mode is masked by the umask; say exactly what we mean
    return path


def open_private(path: Path | str, flags: int) -> int:
    """`os.open` that creates the file 0600 (flags get O_CREAT); an existing file keeps its mode."""
    return os.open(path, flags | os.O_CREAT, FILE_MODE)


def create_private(path: Path) -> None:
    """An empty 0600 file at `path` unless one exists (e.g. a database before SQLite opens it:
    SQLite gives its -wal and -shm files the database file's permissions)."""
    os.close(open_private(path, os.O_WRONLY))


def tighten(root: Path) -> list[str]:
    """Make `root` and everything under it private; returns what was changed (paths, no content).

    Only entries owned by this user are changed; a symlink is never followed. A directory that
    is already private is not descended into for its files' sake unless it was loose itself or
    is the root, so a large, already-private blob store is not walked on every start."""
    changed: list[str] = []
    uid = os.getuid()

    def fix(p: Path, st: os.stat_result, mode: int) -> None:
        if st.st_uid == uid and stat.S_IMODE(st.st_mode) & 0o077:
            os.chmod(p, stat.S_IMODE(st.st_mode) & ~0o077 | (mode & 0o700))
            changed.append(str(p))

    def walk(d: Path, deep: bool) -> None:
        try:
            entries = list(os.scandir(d))
        except OSError:
            return
        for e in entries:
            try:
                st = e.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode):
                loose = bool(stat.S_IMODE(st.st_mode) & 0o077)
                fix(Path(e.path), st, DIR_MODE)
                if deep or loose or e.name in SHALLOW_DIRS:
                    walk(Path(e.path), deep or loose)
            elif stat.S_ISREG(st.st_mode):
                fix(Path(e.path), st, FILE_MODE)

    try:
        st = os.stat(root)  # the data directory itself may be a symlink to where the disk is
    except OSError:
        return changed
    if not stat.S_ISDIR(st.st_mode):
        return changed
    loose_root = bool(stat.S_IMODE(st.st_mode) & 0o077)
    fix(root, st, DIR_MODE)
    walk(root, loose_root)
    return changed


SHALLOW_DIRS = frozenset({"keys", "checkpoints"})
"""Small directories always checked file by file (the blob store only when it was loose)."""


def tighten_logged(root: Path) -> None:
    """`tighten` with one log line saying how many entries were opened up and where."""
    try:
        changed = tighten(root)
    except OSError as exc:
        log.warning("%s: cannot make the record files private (%s); check their owner and mode", root, exc)
        return
    if changed:
        shown = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
        log.warning("made %d record file(s)/directories under %s private (0700/0600); they were readable by "
                    "other local users: %s", len(changed), root, shown)


def write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` (replacing its content) as a 0600 file."""
    fd = open_private(path, os.O_WRONLY | os.O_TRUNC)
    os.fchmod(fd, FILE_MODE)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)

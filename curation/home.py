"""The Curate home is private: it holds conversations, hashed user ids and the annotation server's keys.

Curate creates the home 0700 and its data files (the SQLite store and its -wal/-shm, quarantine files, logger spools)
0600, whatever the umask. A home that already exists keeps its mode (a team may share one through a group on
purpose); when group or others can get in, Curate says so once per process.
"""
from __future__ import annotations

import logging
import os
import stat
import threading
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600

log = logging.getLogger("curate")
_warned = threading.Event()


def ensure_home(path: Path) -> Path:
    """Create `path` (0700, its parents as usual) if it does not exist; warn once if an existing one is open to others."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if private_dir(path):
        return path
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077 and not _warned.is_set():
        _warned.set()
        log.warning("curate: the Curate home %s is open to other users (mode %04o) and holds conversations and API "
                    "keys; run `chmod 700 %s` unless you share it on purpose", path, mode, path)
    return path


def private_dir(path: Path) -> bool:
    """Create the folder `path` with mode 0700 (its parent must exist); False if it existed already."""
    try:
        path.mkdir(mode=DIR_MODE)
    except FileExistsError:
        if not path.is_dir():
            raise
        return False
    os.chmod(path, DIR_MODE)  # mkdir's mode is masked by the umask
    return True


def create_private(path: Path) -> None:
    """Create the file `path` empty with mode 0600 unless it exists (an existing file keeps its mode)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return
    os.fchmod(fd, FILE_MODE)  # the mode given to open is masked by the umask
    os.close(fd)


def open_private(path: Path, mode: str = "ab"):  # a binary file object
    """`open(path, mode)` for writing, creating the file 0600 if it is new."""
    create_private(path)
    return open(path, mode)

"""A spool: records kept on local disk, one JSON object a line, until the store can take them.

The logger spools when the store cannot be written; `curate collect` spools what it has acknowledged before the store
holds it. `curate ingest FILE` loads a spool file with nothing lost and nothing twice (records carry their ids).

    spool = Spool(home / "spool" / "logger-42.jsonl", fallback_dirs=fallback_dirs())
    spool.append(records)        # on disk (fsync'd) when it returns; SpoolFull past max_bytes
    for path in spool.seal():    # closed files, safe to ingest and then delete while appends go on
        ...

When the spool's own folder cannot be written (an unwritable home, a full disk), `append` writes the same file name
in the first fallback folder that works; `files()` and `seal()` cover every location. Folders the spool creates are
0700 and its files 0600, whatever the umask; a fallback folder in a shared place (/tmp) must be the user's own.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import itertools
import os
import stat
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterable, Iterator

import orjson

from curation.errors import CurateError
from curation.home import DIR_MODE, FILE_MODE

__all__ = ["Spool", "SpoolFull", "SpoolUnavailable", "fallback_dirs"]


class SpoolFull(CurateError):
    """Appending would take the spool past its `max_bytes`."""


class SpoolUnavailable(CurateError):
    """No spool location could be written; the message names each one and why."""


def fallback_dirs() -> list[Path]:
    """Where a spool goes when its own folder cannot be written: the user's state folder
    ($XDG_STATE_HOME/curate/spool, else ~/.local/state/curate/spool), then a private folder in the temporary folder."""
    dirs = []
    state = os.environ.get("XDG_STATE_HOME")
    with contextlib.suppress(RuntimeError, KeyError):  # no home folder for this user
        dirs.append(Path(state) if state else Path.home() / ".local" / "state")
    dirs = [d / "curate" / "spool" for d in dirs]
    dirs.append(Path(tempfile.gettempdir()) / f"curate-{os.geteuid()}" / "spool")
    return dirs


class Spool:
    """Appends records durably to `path`, else to the same name in the first writable `fallback_dirs` entry."""

    def __init__(self, path: str | os.PathLike, fallback_dirs: Iterable[str | os.PathLike] = (),
                 max_bytes: int | None = None):
        self.path = Path(path)
        self.fallback_dirs = [Path(d) for d in fallback_dirs]
        self.max_bytes = max_bytes
        self.last_path: Path | None = None  # where the newest append went
        self.skipped: list[str] = []  # the locations the newest append could not write, each with its reason
        self._lock = threading.Lock()
        self._sealed = itertools.count()

    @property
    def locations(self) -> list[Path]:
        """The file names an append may write, in the order tried."""
        return [self.path] + [d / self.path.name for d in self.fallback_dirs if d != self.path.parent]

    def append(self, records: list[dict[str, Any]]) -> Path:
        """Write `records` as JSON lines; they are on disk when this returns, which is the path written.

        Either every record of the call is written or none is. Raises SpoolFull when the spool would pass
        `max_bytes`, SpoolUnavailable when no location takes them."""
        data = b"".join(orjson.dumps(r, default=str) + b"\n" for r in records)
        with self._lock:
            if self.max_bytes is not None:
                held = self.size_bytes()
                if held + len(data) > self.max_bytes:
                    raise SpoolFull(f"the spool {self.path} holds {held:,} bytes and its limit is {self.max_bytes:,}; "
                                    f"load it with `curate ingest {self.path.parent}` to make room")
            reasons = []
            for target in self.locations:
                try:
                    _append(target, data, shared=target != self.path)
                except OSError as exc:
                    reasons.append(f"{target}: {exc.strerror or exc}")
                    continue
                self.last_path, self.skipped = target, reasons
                return target
            raise SpoolUnavailable("could not spool to any location (" + "; ".join(reasons) + ")")

    def files(self) -> list[Path]:
        """Every file of this spool that holds records: sealed ones first (oldest first), then the open ones."""
        stem, found = self.path.stem, []
        for target in self.locations:
            with contextlib.suppress(OSError):
                found += sorted(p for p in target.parent.glob(f"{stem}.*.jsonl") if p.is_file())
        for target in self.locations:
            with contextlib.suppress(OSError):
                if target.stat().st_size:
                    found.append(target)
        return found

    def size_bytes(self) -> int:
        """Bytes held in all of this spool's files."""
        total = 0
        for path in self.files():
            with contextlib.suppress(OSError):
                total += path.stat().st_size
        return total

    def seal(self) -> list[Path]:
        """Close the files appends write to (renamed aside; the next append starts new ones) and return every sealed
        file, oldest first. Each can be ingested and then deleted while appends go on."""
        with self._lock:
            for target in self.locations:
                with contextlib.suppress(FileNotFoundError), _locked(target, create=False, shared=False) as fd:
                    if os.fstat(fd).st_size:
                        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%f")
                        os.rename(target, target.with_name(f"{target.stem}.{stamp}-{next(self._sealed)}.jsonl"))
        return [p for p in self.files() if p not in self.locations]


def _append(target: Path, data: bytes, shared: bool) -> None:
    """Append `data` to `target` and fsync it; on any error, cut the file back to where it was."""
    created = _private_folders(target.parent, strict=shared)
    with _locked(target, create=True, shared=shared) as fd:
        start = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)
            raise
    if created or start == 0:  # a new file: its folder entry must reach the disk too
        _fsync_dir(target.parent)


@contextlib.contextmanager
def _locked(target: Path, create: bool, shared: bool) -> Iterator[int]:
    """An fd of `target` (O_APPEND) under an exclusive flock, reopened if the file was renamed or deleted while the
    lock was awaited, so no record lands in a file that a drain has already taken."""
    flags = os.O_WRONLY | os.O_APPEND | (os.O_CREAT if create else 0) | (os.O_NOFOLLOW if shared else 0)
    for _ in range(100):
        fd = os.open(target, flags, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            held = os.fstat(fd)
            try:
                now = os.stat(target)
            except FileNotFoundError:
                now = None
            if now is not None and (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino):
                if create and held.st_size == 0 and stat.S_IMODE(held.st_mode) != FILE_MODE and held.st_uid == os.geteuid():
                    os.fchmod(fd, FILE_MODE)  # the mode given to open is masked by the umask
                yield fd
                return
            if not create and now is None:
                raise FileNotFoundError(target)
        finally:
            os.close(fd)
    raise OSError(f"{target} keeps being replaced")


def _private_folders(folder: Path, strict: bool) -> bool:
    """Create `folder` and any missing parents 0700; True if `folder` was created. With `strict` (a shared place such
    as /tmp), the folder must be a real folder owned by this user, and is made private if it is not."""
    missing = []
    level = folder
    while not level.exists():
        missing.append(level)
        if level.parent == level:
            break
        level = level.parent
    for path in reversed(missing):
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=DIR_MODE)
            os.chmod(path, DIR_MODE)  # mkdir's mode is masked by the umask
    if strict:  # the folder and the one holding it: someone else's could move or read the spool
        for path in (folder, folder.parent):
            info = os.lstat(path)
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
                raise PermissionError(13, "not a folder of this user's own", str(path))
        if stat.S_IMODE(os.lstat(folder).st_mode) & 0o077:
            os.chmod(folder, DIR_MODE)
    return bool(missing)


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

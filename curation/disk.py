"""A full disk, recognised in whatever exception reports it, and said in one line: which disk, and where.

SQLite says "database or disk is full" (SQLITE_FULL), PostgreSQL raises DiskFull (SQLSTATE 53100), and a file write
raises OSError ENOSPC or EDQUOT. SQLAlchemy and the ingest writer thread wrap these, so the whole chain is searched.
"""
from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def disk_full_message(exc: BaseException, store: str | os.PathLike | None = None,
                      files: list[str | os.PathLike] | tuple = ()) -> str | None:
    """One line saying the disk is full and where, if `exc` (or an exception it wraps) reports a full disk; else None.
    `store`: the SQLite file (or database URL) the command uses; `files`: what else it writes (--out). They name the
    place when the error itself does not say which file."""
    for cause in _chain(exc):
        if isinstance(cause, OSError) and cause.errno in FULL_ERRNOS:
            where = cause.filename or _nearly_full([*files, store])
            return _message(f"writing {where}" if where else "writing a file", where)
        if getattr(cause, "sqlstate", None) == "53100" or type(cause).__name__ == "DiskFull":
            return _message(f"the PostgreSQL server could not write ({str(cause).strip().splitlines()[0][:160]})", None)
        if "database or disk is full" in str(cause).lower():
            return _message(f"writing the SQLite store {store}" if store else "writing the SQLite store", store)
    return None


def _nearly_full(places: list) -> str | None:
    """The first local path among `places` on a file system with under 1 MiB left."""
    for place in places:
        if not place or "://" in str(place):
            continue
        try:
            if shutil.disk_usage(_mount_point(Path(place))).free < (1 << 20):
                return str(place)
        except OSError:
            continue
    return None


def store_location(home: str | os.PathLike | None) -> str:
    """The store a command with `--home home` writes: the SQLite file, or the database URL without its password."""
    from curation.config import resolve_home

    url = os.environ.get("CURATE_DATABASE_URL")
    if not url:
        return str(resolve_home(home) / "curate.db")
    import sqlalchemy as sa

    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:  # an unreadable URL is reported elsewhere; here it only names the place
        return "the database in CURATE_DATABASE_URL"


def _message(what: str, where: str | os.PathLike | None) -> str:
    detail = ""
    if where is not None and "://" not in str(where):
        mount = _mount_point(Path(where))
        try:
            free = shutil.disk_usage(mount).free
            detail = f" (file system {mount}, {free:,} bytes free)"
        except OSError:
            detail = f" (file system {mount})"
    return (f"the disk is full: {what}{detail}; free space there (or point --home or TMPDIR elsewhere) and run the "
            "same command again: what was committed before is kept")


def _mount_point(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return path


def _chain(exc: BaseException):
    seen: set[int] = set()
    todo = [exc]
    while todo:
        cause = todo.pop()
        if cause is None or id(cause) in seen:
            continue
        seen.add(id(cause))
        yield cause
        todo += [c for c in (getattr(cause, "orig", None), cause.__cause__, cause.__context__)
                 if isinstance(c, BaseException)]

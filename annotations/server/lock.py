"""One server per home: the search index lives in the serving process's memory, so a second server on the same
database would answer from an empty index (0 records where the first shows 10).

The server holds an exclusive `flock` on HOME/argilla/server.lock for its lifetime and writes its pid and address
into it. The kernel drops the lock when the process ends, however it ends, so a file left by `kill -9` blocks nothing.
"""
from __future__ import annotations

import fcntl
import json
import os
from typing import IO

from annotations.server.settings import ServerSettings
from curation.errors import CurateError
from curation.home import create_private

LOCK_NAME = "server.lock"


def hold_server_lock(settings: ServerSettings) -> IO[str]:
    """Take the home's server lock or raise CurateError naming the server that holds it. Keep the file open."""
    path = settings.ensure_folder() / LOCK_NAME
    create_private(path)
    handle = open(path, "r+", encoding="utf-8")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            holder = json.loads(handle.read() or "{}")
        except ValueError:
            holder = {}
        handle.close()
        who = f"pid {holder['pid']}, port {holder['port']}" if {"pid", "port"} <= holder.keys() else "it is starting"
        raise CurateError(f"another Argilla server already serves {settings.home} ({who}); stop it, or use another --home") from None
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps({"pid": os.getpid(), "host": settings.host, "port": settings.port, "url": settings.url}))
    handle.flush()
    return handle


def serving(settings: ServerSettings) -> dict | None:
    """The server that holds this home's lock ({"pid", "host", "port", "url"}; {} while it writes them), or None.
    A server holds the lock from before it prepares its database and index until it stops."""
    path = settings.folder / LOCK_NAME
    try:
        handle = open(path, encoding="utf-8")
    except OSError:
        return None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                return json.loads(handle.read() or "{}")
            except ValueError:
                return {}
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None

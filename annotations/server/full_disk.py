"""A full disk under the embedded server: HTTP 507 that says so, and one clear line in the server's log.

argilla-server answers any database error with a bare HTTP 500, so an annotator whose submission hit a full disk
saw "Internal Server Error" and could not tell a bug from a disk to free. Here SQLite's "database or disk is full"
(and an OSError ENOSPC or EDQUOT) becomes 507 Insufficient Storage with a message for the client, and the log gets
which file system is full and how much is free, once per LOG_EVERY_S while it stays full. The client's message
names no path on the server (annotators need not learn its layout); the operator's log line does. A failed commit
keeps nothing of its request, and what was acknowledged before stays. (A submission whose response was committed
but whose record status was not is answered 507 too; the status is set again by the record's next response.)
"""
from __future__ import annotations

import logging
import os
import time

from curation.disk import disk_full_message

_LOGGER = logging.getLogger("curate.argilla")
STATUS = 507
CLIENT_MESSAGE = ("the annotation server's disk is full, so this request was not completed (what the server "
                  "acknowledged before is kept); ask whoever runs the server to free space there, then try again")
LOG_EVERY_S = 60.0
_last_logged = [float("-inf")]


def database_path() -> str:
    return os.path.join(os.environ.get("ARGILLA_HOME_PATH", "."), "argilla.db")


def log_full(exc: BaseException) -> str | None:
    """The operator's line for `exc` if it reports a full disk (logged at most once per LOG_EVERY_S); else None."""
    line = disk_full_message(exc, database_path())
    if line is None:
        return None
    now = time.monotonic()
    if now - _last_logged[0] >= LOG_EVERY_S:
        _last_logged[0] = now
        where = line.split("; free space", 1)[0]
        _LOGGER.error("%s; requests that write answer HTTP %d until space is freed there, then the server goes on "
                      "by itself (nothing acknowledged is lost)", where, STATUS)
    return line


def install() -> None:
    """Answer a full disk with 507 on argilla-server's v1 API (idempotent). Other errors stay as they were."""
    import sqlalchemy as sa
    from fastapi.responses import JSONResponse

    from argilla_server.api.routes import api_v1

    if getattr(api_v1.state, "curate_full_disk", False):
        return

    async def full_disk(request, exc):
        if log_full(exc) is None:
            raise exc  # not a full disk: argilla-server's own answer (HTTP 500)
        return JSONResponse(status_code=STATUS, content={"detail": CLIENT_MESSAGE})

    for kind in (sa.exc.OperationalError, OSError):
        api_v1.add_exception_handler(kind, full_disk)
    api_v1.state.curate_full_disk = True

"""One run per loop at a time, across processes and hosts, on SQLite and PostgreSQL alike.

The lock is a row in `loop_locks` keyed by the loop's name: inserting it takes the lock, the primary key refuses a
second holder. A holder refreshes its heartbeat while it works. A lock whose holder is dead (its pid is gone, on this
host; or its heartbeat is older than `stale_after`, from any host) is taken over with a compare-and-swap update.
"""
from __future__ import annotations

import datetime as dt
import os
import socket
import threading

import sqlalchemy as sa

from curation.errors import CurateError
from curation.store import Store, utcnow
from loops.loop.tables import loop_locks

STALE_AFTER_S = 15 * 60
HEARTBEAT_S = 30
_HELD: set[tuple[str, str]] = set()  # (loop, run_id) locks this process holds right now


class LoopBusy(CurateError):
    """Another run of this loop holds the lock."""

    def __init__(self, loop: str, holder: dict):
        self.holder = holder
        super().__init__(
            f"loop '{loop}' is already running as run {holder['run_id']} (pid {holder['pid']} on {holder['host']}, "
            f"since {holder['acquired_at']}); this invocation exits without doing anything"
        )


class LoopLock:
    def __init__(self, store: Store, loop: str, run_id: str, stale_after: float = STALE_AFTER_S):
        self.store, self.loop, self.run_id, self.stale_after = store, loop, run_id, stale_after
        self.pid, self.host = os.getpid(), socket.gethostname()
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def acquire(self) -> None:
        now = utcnow()
        row = {"loop": self.loop, "run_id": self.run_id, "pid": self.pid, "host": self.host, "acquired_at": now, "heartbeat_at": now}
        try:
            with self.store.begin() as conn:
                conn.execute(loop_locks.insert().values(**row))
        except sa.exc.IntegrityError:
            holder = self._holder()
            if holder is None:  # released between our insert and our look
                return self.acquire()
            if not holder_is_dead(holder, self.stale_after):
                raise LoopBusy(self.loop, holder) from None
            with self.store.begin() as conn:  # take over only if nobody else did meanwhile
                taken = conn.execute(
                    loop_locks.update()
                    .where(loop_locks.c.loop == self.loop, loop_locks.c.run_id == holder["run_id"], loop_locks.c.pid == holder["pid"])
                    .values(**{k: v for k, v in row.items() if k != "loop"})
                ).rowcount
            if taken != 1:
                raise LoopBusy(self.loop, self._holder() or holder) from None
        _HELD.add((self.loop, self.run_id))
        self._beat = threading.Thread(target=self._heartbeat, name="curate-loop-heartbeat", daemon=True)
        self._beat.start()

    def rename(self, run_id: str) -> None:
        """Point the lock at the run being resumed, so that a concurrent caller is told the right run."""
        with self.store.begin() as conn:
            conn.execute(loop_locks.update().where(loop_locks.c.loop == self.loop, loop_locks.c.run_id == self.run_id).values(run_id=run_id))
        _HELD.discard((self.loop, self.run_id))
        _HELD.add((self.loop, run_id))
        self.run_id = run_id

    def release(self) -> None:
        _HELD.discard((self.loop, self.run_id))
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=5)
        with self.store.begin() as conn:
            conn.execute(loop_locks.delete().where(loop_locks.c.loop == self.loop, loop_locks.c.run_id == self.run_id))

    def _holder(self) -> dict | None:
        with self.store.connect() as conn:
            row = conn.execute(sa.select(loop_locks).where(loop_locks.c.loop == self.loop)).mappings().first()
        return plain(row) if row else None

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                with self.store.begin() as conn:
                    conn.execute(loop_locks.update().where(loop_locks.c.loop == self.loop, loop_locks.c.run_id == self.run_id)
                                 .values(heartbeat_at=utcnow()))
            except Exception:  # a missed beat is retried; the run itself decides success
                pass


def plain(row: sa.RowMapping) -> dict:
    """A lock row as a dict with plain str keys (SQLAlchemy returns `quoted_name`s, which JSON encoders refuse)."""
    return {str(key): value for key, value in row.items()}


def holder_is_dead(holder: dict, stale_after: float = STALE_AFTER_S) -> bool:
    """Whether a lock row's process is gone: its pid no longer exists (same host), or, from another host, its
    heartbeat is older than `stale_after`. The next run takes such a lock over and resumes the holder's run."""
    if holder["host"] == socket.gethostname():
        try:
            os.kill(holder["pid"], 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        # our own pid: alive if this process holds it now, else a leftover of an earlier process with our pid
        return holder["pid"] == os.getpid() and (holder["loop"], holder["run_id"]) not in _HELD
    beat = dt.datetime.strptime(holder["heartbeat_at"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)
    return (dt.datetime.now(dt.UTC) - beat).total_seconds() > stale_after

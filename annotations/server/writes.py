"""One writer at a time, first come first served: the embedded server's SQLite write transactions queue on an
asyncio lock instead of polling SQLite's.

SQLite lets one connection write at a time. A connection that finds the write lock taken sleeps in SQLite's busy
handler and tries again (after 1, 2, 5 … then 100 ms each time), so under a team the waiters do not queue: a
writer that arrives later can take the lock first, and an unlucky one waits for seconds. Profiled with 20
annotators (docs/performance.md, issue 22), the statement that opens a write transaction took 102 ms on average
and 2 s at p99, almost all of it that sleep, while the event loop was idle 80 % of the time and a commit took 4 ms.

Here each aiosqlite connection takes the lock before the statement that makes pysqlite open a write transaction
(INSERT, UPDATE, DELETE, REPLACE) and gives it back when the transaction ends (commit, rollback, close), so the
writers queue in arrival order and the next one starts as soon as the lock is free. SQLite's own locking still
holds between processes (`curate annotate add-user` beside a server), and the durability of a commit is unchanged.
A writer that waits WAIT_S without its turn goes ahead and leaves it to SQLite's busy timeout, so a leaked turn
cannot stop the server: it logs one warning.
"""
from __future__ import annotations

import asyncio
import logging
import re
import weakref

_LOGGER = logging.getLogger("curate.argilla")
_WRITE = re.compile(r"\s*(INSERT|UPDATE|DELETE|REPLACE)\b", re.IGNORECASE)
WAIT_S = 30.0


class _Turn:
    """The write lock of one event loop, and the connection that holds it."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.holder = None


_TURNS: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Turn]" = weakref.WeakKeyDictionary()


def _turn() -> _Turn:
    loop = asyncio.get_running_loop()
    turn = _TURNS.get(loop)
    if turn is None:
        turn = _TURNS[loop] = _Turn()
    return turn


def _stale(conn) -> bool:
    """The holder was closed, or holds no transaction: its turn was never given back."""
    return conn._connection is None or not conn._connection.in_transaction


async def take_turn(conn, sql: object) -> None:
    if conn.__dict__.get("_curate_turn") is not None or not isinstance(sql, str) or not _WRITE.match(sql):
        return
    turn = _turn()
    try:
        async with asyncio.timeout(WAIT_S):
            await turn.lock.acquire()
    except TimeoutError:
        holder = turn.holder
        if holder is None or not _stale(holder):
            _LOGGER.warning("a database write waited %.0f s for its turn; going ahead (SQLite's lock decides)", WAIT_S)
            return
        holder.__dict__["_curate_turn"] = None  # the lock stays taken: it passes to this connection
    turn.holder = conn
    conn.__dict__["_curate_turn"] = turn


def _give_back(conn) -> None:
    turn = conn.__dict__.get("_curate_turn")
    if turn is None:
        return
    conn.__dict__["_curate_turn"] = None
    if turn.holder is conn:
        turn.holder = None
        turn.lock.release()


def after_statement(conn) -> None:
    """A write that opened no transaction (it failed, or autocommit) ends its turn at once."""
    if conn.__dict__.get("_curate_turn") is not None and (conn._connection is None or not conn.in_transaction):
        _give_back(conn)


def install() -> None:
    """Queue aiosqlite's write transactions in this process (idempotent)."""
    import aiosqlite

    cursor, connection = aiosqlite.Cursor, aiosqlite.Connection
    if getattr(cursor.execute, "_curate_turns", False):
        return

    def statement(method):
        async def run(self, sql, *args, **kwargs):
            conn = self._conn if isinstance(self, cursor) else self
            await take_turn(conn, sql)
            try:
                return await method(self, sql, *args, **kwargs)
            finally:
                after_statement(conn)

        run._curate_turns = True
        return run

    def ending(method, always: bool):
        async def run(self, *args, **kwargs):
            try:
                return await method(self, *args, **kwargs)
            finally:
                # A commit that failed (a full disk) leaves the transaction open: the turn stays until its rollback.
                _give_back(self) if always else after_statement(self)

        return run

    for cls in (cursor, connection):
        cls.execute = statement(cls.execute)
        cls.executemany = statement(cls.executemany)
    for name in ("commit", "rollback", "close"):
        setattr(connection, name, ending(getattr(connection, name), always=name == "close"))


LAST_ACTIVITY_EVERY_S = 5.0


def shorten_response_writes() -> None:
    """Take two of the three statements out of the transaction that stores a response, where they held the write
    lock for every other writer (each statement is a round trip to the connection's thread; under a team that was
    most of the lock's time, the commit being one).

    - A dataset's `last_activity_at` (the UI's "last activity") is written at most once per LAST_ACTIVITY_EVERY_S
      per dataset by this process: it may lag that much.
    - The user's row in `datasets_users` (inserted or left alone on conflict) is written once per dataset and user:
      a pair is known once a transaction that upserted it has committed. Such rows are only deleted with their
      dataset or user (ON DELETE CASCADE), whose ids are never reused.
    """
    import time

    import sqlalchemy as sa
    from sqlalchemy.orm import Session

    from argilla_server.contexts import datasets
    from argilla_server.models.database import DatasetUser

    if getattr(datasets._touch_dataset_last_activity_at, "_curate_throttled", False):
        return
    touch, touched = datasets._touch_dataset_last_activity_at, {}

    async def throttled_touch(db, dataset) -> None:
        now = time.monotonic()
        if now - touched.get(dataset.id, float("-inf")) >= LAST_ACTIVITY_EVERY_S:
            touched[dataset.id] = now
            await touch(db, dataset)

    throttled_touch._curate_throttled = True
    datasets._touch_dataset_last_activity_at = throttled_touch

    upsert, known = DatasetUser.upsert, set()

    async def upsert_once(cls, db, schema, constraints, autocommit: bool = True):
        key = (schema["dataset_id"], schema["user_id"])
        if key in known:
            return None
        db.sync_session.info.setdefault("curate_dataset_users", set()).add(key)
        return await upsert(db, schema=schema, constraints=constraints, autocommit=autocommit)

    DatasetUser.upsert = classmethod(upsert_once)

    @sa.event.listens_for(Session, "after_commit")
    def _committed(session) -> None:
        known.update(session.info.pop("curate_dataset_users", ()))

    @sa.event.listens_for(Session, "after_rollback")
    def _rolled_back(session) -> None:
        session.info.pop("curate_dataset_users", None)

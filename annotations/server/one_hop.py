"""One trip to the connection's thread per SQL statement, instead of four.

aiosqlite runs each sqlite3 call in the connection's own thread, and SQLAlchemy's aiosqlite adapter makes four such
calls per statement: make a cursor, execute, fetch all rows, close the cursor. Each is a hand-off to that thread and
back to the event loop. Profiled under 20 annotators on a busy 2-core machine (docs/performance.md, issue 22), a
hand-off took 2 ms to reach the thread and 4 ms to come back, while SQLite ran a statement in about 1 ms: a request of
a dozen statements spent most of its time passing work between threads, and a write transaction held SQLite's write
lock through all its hand-offs. Here the four calls run as one function in that thread. Rows, description, rowcount
and lastrowid are what the adapter's own cursor would hold; server-side cursors keep the adapter's path.
"""
from __future__ import annotations


def install() -> None:
    """Patch SQLAlchemy's aiosqlite cursor (idempotent). Write statements still take their turn (writes.py)."""
    from collections import deque

    import aiosqlite
    from sqlalchemy.dialects.sqlite.aiosqlite import AsyncAdapt_aiosqlite_cursor

    from annotations.server import writes

    adapter_execute = AsyncAdapt_aiosqlite_cursor.execute
    if getattr(adapter_execute, "_curate_one_hop", False) or not hasattr(aiosqlite.Connection, "_execute"):
        return  # patched already, or an aiosqlite whose internals differ from 0.20's: the adapter's own path

    def execute(self, operation, parameters=None):
        if self.server_side:
            return adapter_execute(self, operation, parameters)
        conn = self._connection  # aiosqlite.Connection; its sqlite3 connection is only touched in its thread

        def run():
            cursor = conn._conn.cursor()
            try:
                cursor.execute(operation, () if parameters is None else parameters)
                description = cursor.description
                return description, cursor.fetchall() if description else None, cursor.lastrowid, cursor.rowcount
            finally:
                cursor.close()

        try:
            self.await_(writes.take_turn(conn, operation))
            try:
                description, rows, lastrowid, rowcount = self.await_(conn._execute(run))
            finally:
                writes.after_statement(conn)
        except Exception as error:
            self._adapt_connection._handle_exception(error)
        if description:
            self.description, self.lastrowid, self.rowcount = description, -1, -1
            self._rows = deque(rows)
        else:
            self.description, self.lastrowid, self.rowcount = None, lastrowid, rowcount

    execute._curate_one_hop = True
    AsyncAdapt_aiosqlite_cursor.execute = execute

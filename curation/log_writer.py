"""The logger's writer: takes queued records, writes them to the store in batches, spools what the store refuses.

`ConversationLogger` (curation/logger.py) runs a `LogWriter` in a process of its own (`main()`, fed JSON lines on
stdin, answering on stdout), so that validating and inserting batches never holds the app's GIL; or, where no
process can be started, in a thread of the app.

When the store cannot be written (down, locked, full, or its SQLite file deleted or replaced under the logger), the
batch goes to a spool (`curation.spool`: JSON lines, fsync'd, 0600 files in 0700 folders) which `curate ingest SPOOL`
loads later with nothing lost. The spool is HOME/spool/logger-PID.jsonl, else the same name in a fallback folder (see
`curation.spool.fallback_dirs`); when no place takes a batch it waits in a bounded buffer in memory and is retried,
and whatever is still unwritten at `close()` (or pushed out of that buffer) is counted in `lost` and logged as an error.
"""
from __future__ import annotations

import collections
import logging
import os
import queue
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterable

import orjson

from curation.errors import StoreError
from curation.spool import Spool

log = logging.getLogger("curate.logger")
_STOP = object()


class LogWriter:
    """A background thread that writes queued records (conversations and feedback events) to the store.

    `written`, `spooled` and `lost` count records (conversations and feedback events) that reached the store, a
    spool file, or nowhere. `max_pending` bounds the records kept in memory while neither store nor spool takes them.
    """

    def __init__(self, home: Path, url: str | None, spool: Path, spool_fallbacks: Iterable[str | os.PathLike],
                 batch_size: int = 500, flush_interval: float = 1.0, max_queue: int = 100_000,
                 max_pending: int = 100_000, retry_interval: float = 5.0):
        self.home = Path(home)
        self.url = url
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.retry_interval = retry_interval
        self.max_pending = max_pending
        self.spool = Spool(spool, spool_fallbacks)
        self.written = 0
        self.spooled = 0
        self.lost = 0
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self._pending: collections.deque = collections.deque()  # neither store nor spool took these yet
        self._pending_lock = threading.Lock()
        self._retried = 0.0
        self._outage: str | None = None  # why the store is not being written, while it is not
        self._fallback: Path | None = None  # the fallback spool last warned about
        self._store = None
        self._database: tuple[Path, int, int] | None = None  # the SQLite file the open store writes: path, dev, inode
        self._thread = threading.Thread(target=self._run, name="curate-logger", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Write what is queued, retry what is held in memory once more, and stop; what is still unwritten is lost."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout=30)

    def put(self, item: Any) -> None:
        """Queue a record, which never blocks; or a threading.Event, set once what came before it is written."""
        if not isinstance(item, dict):
            self._queue.put(item)
            return
        try:
            self._queue.put_nowait(item)
        except queue.Full:  # the writer is far behind: spool right here rather than block or drop
            self._spool([item])

    def _run(self) -> None:
        batch: list[dict] = []
        while True:
            try:
                item = self._queue.get(timeout=self.flush_interval)
            except queue.Empty:
                item = None
            if isinstance(item, dict):
                batch.append(item)
                if len(batch) < self.batch_size:
                    continue
            if batch:
                self._write(batch)
                batch = []
            if self._pending and (item is not None or time.monotonic() - self._retried >= self.retry_interval):
                self._retry()
            if isinstance(item, threading.Event):
                item.set()
            elif item is _STOP:
                self._give_up()
                return

    def _write(self, batch: list[dict]) -> None:
        try:
            from curation.ingest import ingest_records

            store = self._open_store()
            ingest_records(store, batch, source="logger")
            self._check_database()  # deleted while the batch went in: it went into a file no one can open
            if self._database is not None:  # hold no SQLite file open between batches: its -wal and -shm files
                store.dispose()  # would be taken for those of a file put at the same path by a restore
            self.written += len(batch)
            if self._outage is not None:
                log.warning("curate: the store is written again; records spooled meanwhile are in %s "
                            "(`curate ingest FILE` loads them)", ", ".join(str(p) for p in self.spool.files()))
                self._outage = None
        except Exception as exc:  # the store is down, full or gone: keep the data on local disk
            self._close_store()
            self._spool(batch, store_reason(exc))

    def _open_store(self):
        from curation.store import Store

        if self._store is not None:
            try:
                self._check_database()
                return self._store
            except StoreError as exc:  # deleted or replaced: what is at the path now is the store
                log.warning("curate: %s; the logger reopens the store", exc)
                self._close_store()
        if self._database is not None and not self._database[0].exists():
            # never create an empty store where the user deleted one: spool until a store is there again
            raise StoreError(f"the database {self._database[0]} was deleted")
        self._store = Store.open(self.home, self.url)
        database = self._store.engine.url.database if self._store.dialect == "sqlite" else None
        if database and database != ":memory:" and not database.startswith("file:"):
            info = os.stat(database)
            self._database = (Path(database), info.st_dev, info.st_ino)
        return self._store

    def _check_database(self) -> None:
        if self._database is None:
            return
        path, dev, ino = self._database
        try:
            info = os.stat(path)
        except FileNotFoundError:
            raise StoreError(f"the database {path} was deleted while the logger wrote to it") from None
        if (info.st_dev, info.st_ino) != (dev, ino):
            raise StoreError(f"the database {path} was replaced by another file while the logger wrote to it")

    def _close_store(self) -> None:
        if self._store is not None:
            try:
                self._store.dispose()
            except Exception:  # a store that broke may not close cleanly either
                log.debug("curate: could not close the store", exc_info=True)
        self._store = None

    def _spool(self, batch: list[dict], reason: str | None = None) -> None:
        try:
            where = self.spool.append(batch)
            self.spooled += len(batch)
        except Exception as exc:
            self._hold(batch, f"{reason or 'the writer is behind'}; {exc}")
            return
        if reason is not None and self._outage is None:  # once an outage: its end is logged too
            log.warning("curate: store unavailable (%s); spooling %d records to %s (`curate ingest %s` loads them)",
                        reason, len(batch), where, where)
            self._outage = reason
        if where != self.spool.path and where != self._fallback:
            log.warning("curate: spooling to %s, as %s", where, "; ".join(self.spool.skipped))
            self._fallback = where

    def _hold(self, batch: list[dict], reason: str) -> None:
        """Keep `batch` in memory for a retry; past `max_pending` the oldest records are lost, loudly."""
        with self._pending_lock:
            self._pending.extend(batch)
            dropped = max(0, len(self._pending) - self.max_pending)
            for _ in range(dropped):
                self._pending.popleft()
            self.lost += dropped
            held = len(self._pending)
        if dropped:
            log.error("curate: LOST %d logged records: neither the store nor any spool location takes them (%s), "
                      "and %d more wait in memory", dropped, reason, held)
        else:
            log.error("curate: could not store or spool %d records (%s); holding %d in memory to retry",
                      len(batch), reason, held)

    def _retry(self) -> None:
        self._retried = time.monotonic()
        with self._pending_lock:
            batch = list(self._pending)
            self._pending.clear()
        if batch:
            self._write(batch)

    def _give_up(self) -> None:
        self._retry()
        with self._pending_lock:
            left = len(self._pending)
            self._pending.clear()
        if left:
            self.lost += left
            log.error("curate: LOST %d logged records at close: neither the store nor any spool location (%s) "
                      "took them", left, ", ".join(str(p) for p in self.spool.locations))




def main() -> None:
    """The writer process: records (JSON lines) on stdin, `F n` to flush, `S` (or the end of stdin) to stop; on
    stdout, JSON lines: `ready`, `counts` (written, spooled, lost), `flushed` n, and `log` records to re-emit."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C meant for the app must not drop what is queued here
    settings = orjson.loads(sys.argv[1])
    out, lock = sys.stdout.buffer, threading.Lock()
    writer: LogWriter | None = None

    def report(**message: Any) -> None:
        with lock:  # counts read under the lock, so a later line never carries older counts
            if writer is not None:
                message["counts"] = [writer.written, writer.spooled, writer.lost]
            out.write(orjson.dumps(message) + b"\n")
            out.flush()

    class Forward(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            text = record.getMessage()
            if record.exc_info:
                text += "\n" + logging.Formatter().formatException(record.exc_info)
            report(log=[record.levelno, text])

    class Flushed(threading.Event):
        def __init__(self, number: int):
            super().__init__()
            self.number = number

        def set(self) -> None:
            report(flushed=self.number)

    curate = logging.getLogger("curate")
    curate.addHandler(Forward())
    curate.setLevel(settings.pop("log_level"))
    curate.propagate = False
    writer = LogWriter(**settings)
    report(ready=os.getpid())
    ticker = threading.Thread(target=_tick, args=(report,), daemon=True)
    ticker.start()
    for line in sys.stdin.buffer:
        if line[:1] == b"{":
            writer.put(orjson.loads(line))
        elif line[:1] == b"F":
            writer.put(Flushed(int(line[1:])))
        elif line[:1] == b"S":
            break
    writer.close()
    report(closed=True)


def _tick(report: Any) -> None:
    while True:
        time.sleep(0.5)
        report()


def store_reason(exc: BaseException) -> str:
    """The driver's one-line reason, never the statement: SQLAlchemy's message carries the SQL and its parameters,
    which are the users' conversations."""
    cause = getattr(exc, "orig", None) or exc
    lines = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {lines[0][:200] if lines else ''}"


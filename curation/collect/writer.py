"""The one thread that writes what `curate collect` accepted: group commit into the store, else the spool.

Request handlers parse and validate, then `submit` a `Unit` and wait for its outcome. The writer takes every unit
pending at that moment, writes them through one long-lived ingest job (the same validation, duplicate and conflict
rules as `curate ingest`) in one commit, and only then reports "store" to each. When the store fails, the same units
are appended to the spool (the logger's, in HOME/spool) and reported "spool"; a unit is acknowledged only after one
of the two. While the store is down the writer spools at once and tries the store again every `retry` seconds; once
it answers, the spool files are ingested and removed. A spool over `max_spool` bytes, or more than `max_pending`
bytes waiting for the writer, turns new requests away (429) until there is room.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import sqlite3
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import sqlalchemy as sa

from curation.collect.auth import active_hashes
from curation.config import IngestSettings
from curation.ingest import IngestJob, ingest
from curation.logger import store_reason
from curation.spool import Spool, SpoolFull, SpoolUnavailable, fallback_dirs
from curation.store import Store

log = logging.getLogger("curate.collect")
SPOOL_NAME = re.compile(r"collect-(\d+)-(otel|records)(\.[^/]+)?\.jsonl")  # open, or sealed for a drain
TOKEN_REFRESH = 5.0  # seconds between reloads of the active token hashes
CHECKPOINT_EVERY = 0.5  # seconds between two WAL checkpoints (SQLite), run beside the writer rather than in a commit


class Busy(Exception):
    """No room for this request now: answer 429 with Retry-After."""


@dataclass
class Unit:
    """One request's accepted data. `apply(job)` hands it to the ingest job; `spool()` gives what the spool keeps if
    the store cannot take it (the OTLP/JSON export request for traces, ingest records for the JSON API): built only
    then. `rejected` (item, reason) go to the quarantine once the rest is in the store: a spooled request is
    quarantined by the ingest that drains it, so it must not be quarantined now too."""

    otel: bool
    apply: Callable[[IngestJob], None]
    spool: Callable[[], list[dict]]
    size: int
    done: Callable[[str], None] = field(default=lambda outcome: None)
    rejected: list = field(default_factory=list)


class Collector:
    """Owns the store, the ingest job, the spool and the counters of one `curate collect` process."""

    def __init__(self, home: Path, url: str | None = None, max_spool: int = 1 << 30, max_pending: int = 64 << 20,
                 store_timeout: float = 2.0, retry: float = 1.0):
        self.home = home
        self.url = url
        self.max_spool = max_spool
        self.max_pending = max_pending
        self.store_timeout = store_timeout
        self.retry = retry
        self.counts: Counter = Counter()
        self.hashes: frozenset[str] | None = frozenset()  # nobody until the store has been read
        self.spool_dir = home / "spool"
        self._spools = {kind: Spool(self.spool_dir / f"collect-{os.getpid()}-{kind}.jsonl", fallback_dirs(), max_spool)
                        for kind in ("otel", "records")}
        self.spool_bytes = 0
        self.run_id: str | None = None
        self._store: Store | None = None
        self._job: IngestJob | None = None
        self._totals: Counter = Counter()
        self._down_since: float | None = None
        self._next_try = 0.0
        self._tokens_at = 0.0
        self._pending: list[Unit] = []
        self._pending_bytes = 0
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="curate-collect-writer", daemon=True)
        self._checkpoints = threading.Thread(target=self._checkpoint_loop, name="curate-collect-checkpoint", daemon=True)

    # --- the request side
    def count(self, key: str, n: int = 1) -> None:
        with self._cond:
            self.counts[key] += n

    def add(self, counts: dict[str, int]) -> None:
        with self._cond:
            self.counts.update(counts)

    def submit(self, unit: Unit) -> None:
        """Queue `unit` for the writer; raises Busy when there is no room for it."""
        with self._cond:
            if self._stopping:
                raise Busy("shutting down")
            if self._pending_bytes + unit.size > self.max_pending and self._pending:
                raise Busy(f"{self._pending_bytes} bytes are waiting for the store")
            if self._down_since is not None and self.spool_bytes >= self.max_spool:
                raise Busy(f"the store is unavailable and the spool is full ({self.spool_bytes} bytes)")
            self._pending.append(unit)
            self._pending_bytes += unit.size
            self._cond.notify()

    @property
    def store_up(self) -> bool:
        return self._store is not None and self._down_since is None

    # --- lifecycle
    def start(self) -> None:
        """Open the store (a store that is down is retried in the background), then start the writer."""
        self.spool_bytes = self._spool_size()
        self._connect()
        self._thread.start()
        self._checkpoints.start()

    def close(self) -> dict[str, Any]:
        """Write what is pending, drain the spool if the store is up, finish the run; returns the counts."""
        with self._cond:
            if self._stopping:
                return self.summary()
            self._stopping = True
            self._cond.notify()
        for thread in (self._thread, self._checkpoints):
            if thread.is_alive():
                thread.join()
        if self._job is not None:
            try:
                job, self._job = self._job, None
                job.finish()
                self._totals.update(job.counts)
                self._store.finish_run(self.run_id, "done", self.summary())
            except Exception as exc:  # noqa: BLE001 - whatever the store raised, the data goes to the spool
                log.warning("curate collect: could not finish the run: %s", store_reason(exc))
        if self._store is not None:
            self._store.dispose()
        return self.summary()

    def summary(self) -> dict[str, Any]:
        with self._cond:
            counts = dict(self.counts)
        job = self._job.counts if self._job is not None else {}
        ingest = {k: self._totals[k] + job.get(k, 0) for k in ("ingested", "duplicates", "quarantined", "conflicts")}
        return {**counts, **{f"store_{k}": v for k, v in ingest.items()}, "spool_bytes": self.spool_bytes,
                "store_up": self.store_up, "run_id": self.run_id}

    # --- the writer thread
    def _loop(self) -> None:
        while True:
            with self._cond:
                if not self._pending and not self._stopping:
                    self._cond.wait(timeout=1.0)
                units, self._pending, self._pending_bytes = self._pending, [], 0
                stopping = self._stopping
            if units:
                self._write(units)
            elif stopping:
                if self.store_up:
                    self._drain()
                return
            else:
                self._idle()
            if self.store_up and time.monotonic() - self._tokens_at >= TOKEN_REFRESH:
                try:
                    self._refresh_tokens()
                except Exception as exc:  # noqa: BLE001 - whatever the store raised, the data goes to the spool
                    self._down(exc)

    def _write(self, units: list[Unit]) -> None:
        outcome = "store"
        if not self.store_up and time.monotonic() >= self._next_try:
            self._connect()
        if self.store_up:
            try:
                for unit in units:
                    unit.apply(self._job)
                self._job.commit()
            except Exception as exc:  # noqa: BLE001 - whatever the store raised, the data goes to the spool
                self._down(exc)
                outcome = "spool"
        else:
            outcome = "spool"
        if outcome == "spool":
            outcome = self._spool(units)
        else:
            self._quarantine(units)
            if self.spool_bytes:
                self._drain()
        self.count(f"acknowledged_{outcome}" if outcome in ("store", "spool") else f"refused_{outcome}", len(units))
        for unit in units:
            unit.done(outcome)

    def _quarantine(self, units: list[Unit]) -> None:
        """The rejected spans of units now in the store (a spooled unit's are quarantined when it is drained)."""
        try:
            for unit in units:
                for item, reason in unit.rejected:
                    self._job.reject(item, reason)
        except OSError as exc:
            log.error("curate collect: cannot write the quarantine: %s", exc)

    def _idle(self) -> None:
        now = time.monotonic()
        if not self.store_up and now >= self._next_try:
            self._connect()
        if self.store_up and self.spool_bytes:
            self._drain()

    def _connect(self) -> None:
        try:
            if self._store is None:
                self._store = Store.open(self.home, self.url)
                _tune_sqlite(self._store, self.store_timeout)
            if self.run_id is None:
                self.run_id = self._store.start_run("collect", {"pid": os.getpid()})
            self._job = IngestJob(self._store, self.run_id, IngestSettings.resolve(self.home), writer=InlineWriter)
            self._refresh_tokens()
        except Exception as exc:  # noqa: BLE001 - whatever the store raised, the data goes to the spool
            self._down(exc)
            return
        if self._down_since is not None:
            log.warning("curate collect: the store is back after %.1f s", time.monotonic() - self._down_since)
        self._down_since = None
        if self.spool_bytes:
            self._drain()

    def _down(self, exc: BaseException) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.warning("curate collect: store unavailable (%s); spooling to %s", store_reason(exc), self.spool_dir)
            self.count("store_outages")
        if self._job is not None:
            self._job.close()
            self._totals.update(self._job.counts)
            self._job = None
        if self._store is not None:
            self._store.dispose()
        self._next_try = time.monotonic() + self.retry

    def _refresh_tokens(self) -> None:
        self.hashes = active_hashes(self._store)
        self._tokens_at = time.monotonic()

    def _checkpoint_loop(self) -> None:
        """SQLite: copy the WAL into the database file from a connection of its own. SQLite's automatic checkpoint
        runs inside the commit that crosses 1,000 WAL pages and waits for the disk: 20–85 ms during which no request
        was acknowledged (measured at 500 requests/s). A PASSIVE checkpoint never blocks the writer."""
        conn = None
        while not self._stopping:
            time.sleep(CHECKPOINT_EVERY)
            store = self._store
            if store is None or store.dialect != "sqlite" or not store.engine.url.database:
                continue
            try:
                conn = conn or sqlite3.connect(store.engine.url.database, isolation_level=None, check_same_thread=False)
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error as exc:  # a locked or missing store: the writer notices it; try again next turn
                log.debug("curate collect: checkpoint skipped: %s", exc)
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def _spool(self, units: list[Unit]) -> str:
        """Append the units to this process's spools: "spool", "full" (429: the client retries later) or "failed"."""
        try:
            for otel, spool in ((True, self._spools["otel"]), (False, self._spools["records"])):
                records = [record for unit in units if unit.otel == otel for record in unit.spool()]
                if records:
                    spool.append(records)
        except SpoolFull as exc:
            log.error("curate collect: %s; answering 429", exc)
            return "full"
        except SpoolUnavailable as exc:
            log.error("curate collect: cannot spool %d requests (%s); answering 503", len(units), exc)
            return "failed"
        finally:
            self.spool_bytes = self._spool_size()
        self.count("spooled_requests", len(units))
        return "spool"

    def _drain(self) -> None:
        """Ingest the sealed spool files of this process, and every spool file of processes that are gone, then
        remove them (an ingest that stops half-way is repeated: what it stored counts as duplicates)."""
        for spool in self._spools.values():
            spool.seal()
        for path in self._spool_files():
            fmt = "otel" if SPOOL_NAME.fullmatch(path.name)[2] == "otel" else "auto"
            try:
                summary = ingest(self._store, [path], fmt=fmt, progress=False)
            except Exception as exc:  # noqa: BLE001 - whatever the store raised, the data stays in the spool
                self._down(exc)
                return
            path.unlink()
            self.count("drained_records", summary["read"])
            log.warning("curate collect: drained %s: %s", path.name, {k: summary[k] for k in ("ingested", "duplicates")})
        self.spool_bytes = self._spool_size()

    def _spool_files(self) -> list[Path]:
        """This process's sealed spool files (in any location), and the files that processes now gone left in
        HOME/spool. Fallback folders are shared by every home, so other processes' files there are left alone."""
        found = [p for spool in self._spools.values() for p in spool.files() if p not in spool.locations]
        with contextlib.suppress(OSError):
            for path in sorted(self.spool_dir.iterdir()):
                match = SPOOL_NAME.fullmatch(path.name)
                if match and int(match[1]) != os.getpid() and not _alive(int(match[1])):
                    found.append(path)
        return found

    def _spool_size(self) -> int:
        total = sum(spool.size_bytes() for spool in self._spools.values())
        for path in self._spool_files():
            if not path.name.startswith(f"collect-{os.getpid()}-"):  # this process's files are counted above
                with contextlib.suppress(OSError):
                    total += path.stat().st_size
        return total


class InlineWriter:
    """The ingest job's batches written in the thread that hands them over (the collect writer): a commit and its
    acknowledgements wait for no other thread, which on busy cores is a wake-up, and a wait for a core, less."""

    def __init__(self, connect, write):
        self._connect = connect
        self._write = write
        self._stack = contextlib.ExitStack()
        self._conn = None

    def submit(self, batch: Any) -> None:
        if self._conn is None:
            self._conn = self._stack.enter_context(self._connect())
        self._write(self._conn, batch)

    def wait(self) -> None:
        """Every batch is written when `submit` returns."""

    def close(self, raise_error: bool = True) -> None:
        try:
            self._stack.close()
        except Exception as exc:  # noqa: BLE001 - a store that is going away; nothing is pending
            if raise_error:
                raise
            log.debug("curate collect: closing the store connection: %s", store_reason(exc))
        self._conn = None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _tune_sqlite(store: Store, seconds: float) -> None:
    """On SQLite, wait at most `seconds` for a lock another process holds (the store's default is a minute), so that
    a locked store is spooled around instead of holding every acknowledgement; and leave the WAL checkpoints to
    `_checkpoint_loop` (no commit of this process checkpoints)."""
    if store.dialect != "sqlite":
        return

    @sa.event.listens_for(store.engine, "connect")
    def _timeout(dbapi_conn, _record):
        dbapi_conn.execute(f"PRAGMA busy_timeout={int(seconds * 1000)}")
        dbapi_conn.execute("PRAGMA wal_autocheckpoint=0")

    store.engine.dispose()  # connections opened while migrating keep the old timeout


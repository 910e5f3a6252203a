"""The conversation store: one database for all of Curate's state.

SQLite (WAL) at `$CURATE_HOME/curate.db` by default; PostgreSQL when `CURATE_DATABASE_URL` names one.
Opening the store always brings its schema up to date (as `llm` does), so no command needs a separate migrate step.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import itertools
import os
import uuid
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import orjson
import sqlalchemy as sa
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic import command

from curation.config import env_value, resolve_home
from curation.errors import StoreError
from curation.home import create_private, ensure_home, private_dir
from curation.store import tables

MIGRATIONS = Path(__file__).parent / "migrations"
BULK_CACHE_KIB = 64 << 10  # SQLite page cache of a bulk connection; SQLite's default is 2 MiB (docs/performance.md)
# Rows per multi-row INSERT in insert_tuples (the parameter limit may cut it: 2,978 rows of 11 columns on SQLite).
# Large on purpose: after each statement the writing thread waits for the GIL (up to the 5 ms switch interval), so
# 500-row statements spent ~35% longer in inserts than ~3,000-row ones on 200k conversations (docs/performance.md).
ROWS_PER_INSERT = 3_000
# From this many rows, insert_tuples on PostgreSQL COPYs through a staging table (copy_tuples); fewer rows go as one
# multi-row INSERT, which costs one round trip instead of four.
COPY_MIN_ROWS = 100


def utcnow() -> str:
    """Now as the store's timestamp text."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def loads(text: str | None) -> Any:
    return None if text is None else orjson.loads(text)


def _alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head_revision() -> str:
    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


class Store:
    """A handle on the database. Cheap to create; use `Store.open(home)`."""

    def __init__(self, engine: sa.Engine, home: Path):
        self.engine = engine
        self.home = home

    @classmethod
    def open(cls, home: str | os.PathLike | None = None, url: str | None = None, migrate: bool = True) -> "Store":
        """Open (creating if needed) the store for `home`, and migrate it to the newest schema."""
        home_path = resolve_home(home)
        url = url or env_value("CURATE_DATABASE_URL")  # empty = not set, as for every variable
        try:
            ensure_home(home_path)
        except OSError as exc:
            raise StoreError(f"cannot create the Curate home {home_path}: {exc.strerror}; pass --home DIR") from None
        if url is None:
            url = f"sqlite:///{home_path / 'curate.db'}"
        engine = _make_engine(url)
        database = engine.url.database if engine.dialect.name == "sqlite" else None
        if database and database != ":memory:" and not database.startswith("file:"):
            # SQLite gives the -wal and -shm files the database file's mode, so this keeps all three private
            with contextlib.suppress(OSError):  # a folder that does not exist is reported by `migrate`, with its fix
                create_private(Path(database))
        store = cls(engine, home_path)
        if migrate:
            store.migrate()
        return store

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def quarantine_dir(self) -> Path:
        path = self.home / "quarantine"
        ensure_home(self.home)  # a home deleted under a running process comes back private
        private_dir(path)
        return path

    def revision(self) -> str | None:
        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def migrate(self, revision: str = "head") -> None:
        """Upgrade the schema; several processes may call this at once."""
        try:
            if revision == "head" and self.revision() == head_revision():
                return
            with self._migration_lock(), self.engine.begin() as conn:
                if self.dialect == "postgresql":
                    conn.exec_driver_sql("SELECT pg_advisory_xact_lock(4242001)")
                cfg = _alembic_config()
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, revision)
        except sa.exc.OperationalError as exc:
            raise StoreError(f"cannot open the store at {self.engine.url.render_as_string()}: {_first_line(exc)}") from None

    @contextlib.contextmanager
    def _migration_lock(self) -> Iterator[None]:
        if self.dialect != "sqlite":
            yield
            return
        with open(self.home / ".migrate.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def begin(self) -> contextlib.AbstractContextManager[sa.Connection]:
        """A connection inside one transaction, committed on success."""
        return self.engine.begin()

    def connect(self) -> contextlib.AbstractContextManager[sa.Connection]:
        return self.engine.connect()

    @contextlib.contextmanager
    def bulk_connection(self) -> Iterator[sa.Connection]:
        """A connection for a long run of write transactions (ingest); begin each one with `conn.begin()`.

        On SQLite it keeps a larger page cache while it is held, so the primary-key index of a big table stays in
        memory when ids arrive in random order (content hashes), and gives the memory back afterwards.
        """
        with self.engine.connect() as conn:
            if self.dialect != "sqlite":
                yield conn
                return
            default = conn.exec_driver_sql("PRAGMA cache_size").scalar_one()
            conn.exec_driver_sql(f"PRAGMA cache_size=-{BULK_CACHE_KIB}")
            conn.commit()
            try:
                yield conn
            finally:
                conn.rollback()
                conn.exec_driver_sql(f"PRAGMA cache_size={int(default)}")
                conn.commit()

    # runs: every stage records the run that produced its rows
    def start_run(self, kind: str, params: dict | None = None) -> str:
        run_id = str(uuid.uuid4())
        with self.begin() as conn:
            conn.execute(
                tables.runs.insert().values(
                    id=run_id, kind=kind, started_at=utcnow(), status="running", params=dumps(params or {})
                )
            )
        return run_id

    @contextlib.contextmanager
    def run(self, kind: str, params: dict | None = None) -> Iterator["Run"]:
        """Record one run of a stage: `with store.run(kind, params) as run:` gives `run.id` for the rows it writes.

        When the block ends, the run is finished with `run.status` and `run.summary`. When it raises (an interrupt
        included), the run is recorded as failed with `run.progress()` (what it did so far) and the error, and the
        exception goes on; rows the block committed stay.
        """
        run = Run(self.start_run(kind, params))
        try:
            yield run
        except BaseException as exc:
            done = run.progress() if run.progress is not None else {}
            self.finish_run(run.id, "failed", {**done, "error": str(exc)[:500] or type(exc).__name__})
            raise
        self.finish_run(run.id, run.status, run.summary)

    def finish_run(self, run_id: str, status: str = "done", summary: dict | None = None) -> None:
        with self.begin() as conn:
            conn.execute(
                tables.runs.update()
                .where(tables.runs.c.id == run_id)
                .values(finished_at=utcnow(), status=status, summary=dumps(summary or {}))
            )

    def count(self, table: sa.Table) -> int:
        with self.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()

    def dispose(self) -> None:
        self.engine.dispose()


@dataclass
class Run:
    """A run being recorded by `Store.run`; the block sets what its row keeps when it ends."""

    id: str
    status: str = "done"
    summary: dict = field(default_factory=dict)
    progress: Callable[[], dict] | None = None  # the partial summary a failed run keeps

    def finish(self, summary: dict, status: str = "done") -> dict:
        """Keep a copy of `summary` (and `status`) for the run's row; returns `summary`."""
        self.summary, self.status = dict(summary), status
        return summary


def _first_line(exc: BaseException) -> str:
    return str(getattr(exc, "orig", exc)).strip().splitlines()[0]


def _make_engine(url: str) -> sa.Engine:
    try:
        if url.startswith("sqlite"):
            engine = sa.create_engine(url, connect_args={"timeout": 60})

            @sa.event.listens_for(engine, "connect")
            def _pragmas(dbapi_conn, _record):
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=NORMAL")
                cur.execute("PRAGMA busy_timeout=60000")
                cur.close()

            return engine
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url[len("postgresql://"):]
        return sa.create_engine(url, pool_pre_ping=True)
    except (sa.exc.ArgumentError, ImportError) as exc:
        raise StoreError(
            f"cannot use database URL {url!r}: {exc}; use sqlite:///PATH or postgresql+psycopg://USER@HOST/DB"
        ) from None


def insert_ignore(store: Store, table: sa.Table) -> sa.Insert:
    """INSERT that skips rows whose key already exists, on SQLite and PostgreSQL alike (concurrent runs may write
    the same row)."""
    if store.dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table).on_conflict_do_nothing()


def insert_rows(conn: sa.Connection, table: sa.Table, rows: list[dict], ignore_existing: bool = True) -> None:
    """Bulk insert of dict rows through `insert_tuples` (multi-row INSERTs), skipping SQLAlchemy's per-row work.

    Values go in as they are, so callers pass what the column stores (text, numbers, None).
    """
    if rows:
        columns = list(rows[0])
        insert_tuples(conn, table, columns, [tuple(row[c] for c in columns) for row in rows], ignore_existing)


def insert_tuples(
    conn: sa.Connection, table: sa.Table, columns: tuple[str, ...] | list[str], rows: list[tuple], ignore_existing: bool = True
) -> int:
    """`insert_rows` for rows already in `columns` order (the ingest hot path); returns how many rows were inserted.

    With `ignore_existing`, a row whose key is already stored (or repeats an earlier row of `rows`) is skipped and
    not counted, on SQLite and PostgreSQL alike. Rows go in as multi-row INSERTs of up to ROWS_PER_INSERT rows: the
    driver binds a whole statement at once and the database then inserts all its rows in one call that releases
    Python's GIL, so another thread parses meanwhile (executemany takes the GIL back after every row).
    """
    if not rows:
        return 0
    if conn.dialect.name == "postgresql" and len(rows) >= COPY_MIN_ROWS:
        return copy_tuples(conn, table, columns, rows, ignore_existing)
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    head = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES "
    group = f"({', '.join([mark] * len(columns))})"
    tail = " ON CONFLICT DO NOTHING" if ignore_existing else ""
    per = max(1, min(ROWS_PER_INSERT, _max_parameters(conn) // len(columns)))
    added = start = 0
    for size in _statement_sizes(len(rows), per):
        chunk = rows[start : start + size]
        start += size
        sql = head + ", ".join([group] * size) + tail
        added += conn.exec_driver_sql(sql, tuple(itertools.chain.from_iterable(chunk))).rowcount
    return added


def copy_tuples(
    conn: sa.Connection, table: sa.Table, columns: tuple[str, ...] | list[str], rows: list[tuple], ignore_existing: bool = True
) -> int:
    """PostgreSQL's bulk path of `insert_tuples` (same arguments, same result): COPY the rows into a temporary staging
    table, then one `INSERT … SELECT` (with `ON CONFLICT DO NOTHING` when `ignore_existing`) moves them into `table`.

    Both run in the caller's transaction, so a batch is stored whole or not at all. With `ignore_existing`, a key
    repeated inside `rows` keeps its first row, as the multi-row INSERTs do. psycopg writes COPY rows in C and sends
    no statement text to parse per row: the multi-row INSERT spent most of its client time converting placeholders
    (docs/performance.md, Ingest).
    """
    if ignore_existing:
        rows = _first_per_key(table, columns, rows)
    names = ", ".join(columns)
    stage = f"curate_stage_{table.name}_{zlib.crc32(names.encode()):08x}"  # one per table and column list
    # session-local and emptied after each use; created again after a rollback dropped it
    conn.exec_driver_sql(f"CREATE TEMP TABLE IF NOT EXISTS {stage} AS SELECT {names} FROM {table.name} WITH NO DATA")
    sql = f"COPY {stage} ({names}) FROM STDIN"
    dbapi = conn.dialect.loaded_dbapi
    try:
        with conn.connection.driver_connection.cursor() as cursor, cursor.copy(sql) as copy:
            write = copy.write_row
            for row in rows:
                write(row)
    except dbapi.Error as exc:  # raised the way SQLAlchemy raises its statements' errors, which callers catch
        raise sa.exc.DBAPIError.instance(sql, None, exc, dbapi.Error, hide_parameters=True, dialect=conn.dialect) from exc
    tail = " ON CONFLICT DO NOTHING" if ignore_existing else ""
    added = conn.exec_driver_sql(f"INSERT INTO {table.name} ({names}) SELECT {names} FROM {stage}{tail}").rowcount
    conn.exec_driver_sql(f"TRUNCATE {stage}")
    return added


def _first_per_key(table: sa.Table, columns: tuple[str, ...] | list[str], rows: list[tuple]) -> list[tuple]:
    """`rows` without the ones whose primary key repeats an earlier row's (all of them when the key is not in
    `columns`)."""
    keys = [list(columns).index(c.name) for c in table.primary_key.columns if c.name in columns]
    if len(keys) != len(table.primary_key.columns):
        return rows
    seen: set = set()
    add = seen.add
    if len(keys) == 1:
        k = keys[0]
        first = [row for row in rows if not (row[k] in seen or add(row[k]))]
    else:
        first = [row for row in rows if not ((key := tuple(row[k] for k in keys)) in seen or add(key))]
    return rows if len(first) == len(rows) else first


def _statement_sizes(n: int, per: int) -> list[int]:
    """Full statements of `per` rows, then the rest in powers of two: the drivers cache each prepared statement by
    its text, so a few sizes serve every batch instead of one new (large) statement per batch."""
    sizes = [per] * (n // per)
    rest = n % per
    sizes += [1 << bit for bit in range(rest.bit_length() - 1, -1, -1) if rest >> bit & 1]
    return sizes


def _max_parameters(conn: sa.Connection) -> int:
    """How many bound parameters one statement may have."""
    if conn.dialect.name != "sqlite":
        return 65_535  # PostgreSQL's wire protocol
    driver = conn.connection.driver_connection
    if hasattr(driver, "getlimit"):  # Python 3.11+
        import sqlite3

        return driver.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    return 999  # the smallest limit any SQLite has had


def existing_ids(conn: sa.Connection, column: sa.Column, ids: list[str]) -> set[str]:
    """Which of `ids` are already in `column`, queried in chunks that every backend accepts."""
    found: set[str] = set()
    for start in range(0, len(ids), 5_000):
        chunk = ids[start : start + 5_000]
        found.update(conn.execute(sa.select(column).where(among(column, chunk, conn))).scalars())
    return found


def stored_messages(conn: sa.Connection, ids: list[str]) -> Iterator[tuple[str, str]]:
    """(id, stored messages) of the conversations among `ids` that exist, queried 5,000 ids at a time."""
    conversations = tables.conversations
    for start in range(0, len(ids), 5_000):
        yield from conn.execute(sa.select(conversations.c.id, conversations.c.messages)
                                .where(conversations.c.id.in_(ids[start : start + 5_000])))


def among(column: sa.Column, values: list, conn: sa.Connection) -> sa.ColumnElement[bool]:
    """`column IN values`; on PostgreSQL `column = ANY(array)`, one parameter instead of one per value (psycopg
    converts each placeholder of a statement in Python: 5,000 of them cost more than the query)."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import ARRAY

        return column == sa.any_(sa.bindparam(None, values, type_=ARRAY(column.type)))
    return column.in_(values)

"""Tables of the periodic loop (migration 0006): runs, their steps, the lock, and the ingest watermark."""
from sqlalchemy import Column, Float, Index, Integer, PrimaryKeyConstraint, String, Table, Text

from curation.store.tables import metadata

loop_runs = Table(
    "loop_runs",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("loop", String(100), nullable=False),  # the loop's name: locks and resumption are per name
    Column("config", Text),  # JSON of the validated loop file
    Column("status", String(16), nullable=False),  # running | done | partial | failed
    Column("started_at", Text, nullable=False),
    Column("finished_at", Text),
    Column("pid", Integer),
    Column("host", String(200)),
    Column("attempts", Integer, nullable=False, default=1),  # 2+ when a crashed run was resumed
    Column("summary", Text),  # JSON
    Index("ix_loop_runs_loop", "loop", "started_at"),  # the newest run of a loop: resume, history, status
)

loop_steps = Table(
    "loop_steps",
    metadata,
    Column("run_id", String(36), nullable=False),
    Column("step", String(32), nullable=False),
    Column("position", Integer, nullable=False),
    Column("status", String(16), nullable=False),  # pending | running | done | skipped | failed
    Column("started_at", Text),
    Column("finished_at", Text),
    Column("seconds", Float),
    Column("figures", Text),  # JSON: what the step produced
    Column("message", Text),  # why it was skipped or failed
    PrimaryKeyConstraint("run_id", "step"),
)

loop_locks = Table(
    "loop_locks",
    metadata,
    Column("loop", String(100), primary_key=True),
    Column("run_id", String(36), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("host", String(200), nullable=False),
    Column("acquired_at", Text, nullable=False),
    Column("heartbeat_at", Text, nullable=False),
)

loop_files = Table(
    "loop_files",
    metadata,
    Column("loop", String(100), nullable=False),
    Column("path", Text, nullable=False),
    Column("size", Integer, nullable=False),
    Column("mtime", Float, nullable=False),
    Column("run_id", String(36), nullable=False),
    Column("ingested_at", Text, nullable=False),
    PrimaryKeyConstraint("loop", "path"),
)

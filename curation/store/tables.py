"""Table objects for SQLAlchemy Core queries.

The schema itself is created by the numbered Alembic migrations in `migrations/versions/`; these objects only
describe it to queries. Each stage owns its tables: the foundation here, later stages in their own modules
(`curation.store.failure_tables`, `annotations.tables`, `loops.tables`), all on this one `metadata`.
Timestamps are ISO-8601 UTC text (`2026-01-31T12:00:00.000000Z`) so they sort and compare the same in SQLite and PostgreSQL.
"""
from sqlalchemy import Column, ColumnElement, Index, Integer, MetaData, String, Table, Text, or_

metadata = MetaData()

runs = Table(
    "runs",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("kind", String(32), nullable=False),  # ingest, embed, cluster, push, pull, export, train, loop …
    Column("started_at", Text, nullable=False),
    Column("finished_at", Text),
    Column("status", String(16), nullable=False),  # running, done, failed
    Column("params", Text),  # JSON
    Column("summary", Text),  # JSON
)

conversations = Table(
    "conversations",
    metadata,
    Column("id", String(200), primary_key=True),
    Column("messages", Text, nullable=False),  # JSON list of OpenAI chat messages
    Column("model", String(200)),
    Column("created_at", Text),
    Column("session_id", String(200)),
    Column("user_hash", String(64)),  # salted sha256 of the caller's user id, never the id itself
    Column("metadata", Text),  # JSON object
    Column("n_messages", Integer, nullable=False),
    Column("source", Text),  # file or logger that delivered it
    Column("run_id", String(36)),
    Column("ingested_at", Text, nullable=False),
    # no secondary indexes: each costs ~40% of ingest insert time, and no stage looks conversations up by them
)

# conversations.source of a candidate response that `curate generate` wrote (annotations.generate): a pair's second
# response for annotators, never production traffic, so it is not embedded, clustered or routed on its own
GENERATED = "generated"


def is_traffic(table: Table = conversations) -> ColumnElement[bool]:
    """The conversations production delivered, not the candidates Curate generated."""
    return or_(table.c.source.is_(None), table.c.source != GENERATED)

feedback = Table(
    "feedback",
    metadata,
    Column("id", String(64), primary_key=True),  # hash of (conversation, type, value, turn, at): re-ingest adds nothing
    Column("conversation_id", String(200), nullable=False),
    Column("type", String(32), nullable=False),
    Column("value", Text),  # JSON
    Column("turn", Integer),  # index in messages of the assistant message it is about; NULL = the last one
    Column("at", Text),
    Column("run_id", String(36)),
    Index("ix_feedback_conversation", "conversation_id"),
)

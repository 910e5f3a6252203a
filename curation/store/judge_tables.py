"""The LLM judge's ratings (`curate judge`), kept apart from the human ratings in annotations' tables.

Created by migration 0008. One row per (conversation content, judge model, rubric version): that key is the cache, so
a rerun asks nothing and a new model or rubric judges again. Judge ratings are evidence, never human labels.
"""
from sqlalchemy import Column, Index, Integer, PrimaryKeyConstraint, String, Table, Text

from curation.store.tables import metadata

ATTRIBUTES = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")

judgements = Table(
    "judgements",
    metadata,
    Column("conversation_id", String(200), nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("model", Text, nullable=False),
    Column("rubric_version", String(64), nullable=False),
    Column("endpoint", Text),
    *(Column(name, Integer) for name in ATTRIBUTES),
    Column("rationale", Text),
    Column("status", String(16), nullable=False),  # ok | unparseable | failed
    Column("tokens", Integer),
    Column("judged_at", Text, nullable=False),
    Column("run_id", String(36)),
    PrimaryKeyConstraint("conversation_id", "content_hash", "model", "rubric_version"),
    Index("ix_judgements_conversation", "conversation_id"),
)

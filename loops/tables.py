"""Tables of the learning stage: preference exports, the reward-model registry and promotion decisions.

Created by migration 0005. `rewards` (the scores themselves) belongs to the find-the-failures stage
(`curation.store.failure_tables`), so that its failure detector can read it without importing loops.
"""
from sqlalchemy import Column, Index, Integer, String, Table, Text

from curation.store.tables import metadata

reward_models = Table(
    "reward_models",
    metadata,
    Column("version", String(200), primary_key=True),  # e.g. "rm-20260131-120000-bt-1a2b3c"
    Column("path", Text, nullable=False),  # a transformers checkpoint folder
    Column("base", Text),
    Column("loss", String(32)),
    Column("data_version", String(64)),  # the export manifest's content hash
    Column("metrics", Text),  # JSON: train/eval figures
    Column("status", String(16), nullable=False),  # candidate | champion | retired
    Column("created_at", Text, nullable=False),
    Column("run_id", String(36)),
    Index("ix_reward_models_status", "status"),
)

promotions = Table(
    "promotions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("challenger", String(200), nullable=False),
    Column("champion", String(200)),  # NULL when there was none
    Column("decision", String(16), nullable=False),  # promoted | rejected
    Column("figures", Text),  # JSON: accuracies, CIs, per-cluster comparison, gate set hash
    Column("decided_at", Text, nullable=False),
)

preference_exports = Table(
    "preference_exports",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("out", Text, nullable=False),
    Column("pairs", Integer, nullable=False),
    Column("train", Integer, nullable=False),
    Column("test", Integer, nullable=False),
    Column("manifest", Text),  # JSON, the same as manifest.json in the export folder
    Column("created_at", Text, nullable=False),
    Column("run_id", String(36)),
)

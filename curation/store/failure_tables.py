"""Tables of the find-the-failures stage: clusters with stable ids, their per-run history, failure scores, rewards.

Created by migration 0003. Cluster ids are small integers that survive re-clustering (see `curation.cluster`);
`rewards` is written by the reward-model stage (loops) and read here by a failure detector, so curation owns it.
"""
from sqlalchemy import Column, Float, Index, Integer, LargeBinary, PrimaryKeyConstraint, String, Table, Text

from curation.store.tables import metadata

clusters = Table(
    "clusters",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("label", Text),
    Column("keywords", Text),  # JSON list of strings
    Column("examples", Text),  # JSON list of the most central conversation ids
    Column("centroid", LargeBinary),  # float32 bytes, L2-normalised, in the space below
    Column("space", Text),  # the embedding space (model+view) the centroid lives in
    Column("radius", Float),  # cosine similarity a new conversation needs to join without a refit
    Column("size", Integer),
    Column("n_users", Integer),  # distinct user hashes, for the privacy threshold
    Column("created_run_id", String(36)),
    Column("updated_run_id", String(36)),
    Column("retired_run_id", String(36)),  # set when a refit found no successor; the history stays
)

cluster_assignments = Table(
    "cluster_assignments",
    metadata,
    Column("conversation_id", String(200), primary_key=True),
    Column("cluster_id", Integer, nullable=False),
    Column("similarity", Float),  # cosine to the cluster centroid
    Column("run_id", String(36)),
    Column("novel", Integer, nullable=False, default=0),  # 1 = not close enough to any cluster when assigned
    Index("ix_cluster_assignments_cluster", "cluster_id"),
)

cluster_history = Table(
    "cluster_history",
    metadata,
    Column("run_id", String(36), nullable=False),
    Column("cluster_id", Integer, nullable=False),
    Column("size", Integer, nullable=False),
    Column("failures", Integer, nullable=False),
    Column("failure_rate", Float),
    Column("ci_low", Float),
    Column("ci_high", Float),
    Column("novel", Integer),
    Column("at", Text, nullable=False),
    PrimaryKeyConstraint("run_id", "cluster_id"),
)

failure_scores = Table(
    "failure_scores",
    metadata,
    Column("conversation_id", String(200), primary_key=True),
    Column("failure_score", Float, nullable=False),
    Column("signals", Text),  # JSON list of {"name", "value", "weight", "why"}
    Column("run_id", String(36)),
    Column("scored_at", Text, nullable=False),
)

rewards = Table(
    "rewards",
    metadata,
    Column("conversation_id", String(200), nullable=False),
    Column("model_version", String(200), nullable=False),
    Column("reward", Float, nullable=False),
    Column("attributes", Text),  # JSON {"helpfulness": …, …} or null
    Column("scored_at", Text, nullable=False),
    Column("run_id", String(36)),
    PrimaryKeyConstraint("conversation_id", "model_version"),
    Index("ix_rewards_model_version", "model_version"),
)

"""Tables of the learned failure model: each fit as a versioned detector, and the scores of the promoted one.

Created by migration 0007. The model learns from ratings (annotations' tables), so its code lives in
`loops.failures`; it writes its scores here so that curation (cluster ranking, routing, reports) reads them without
importing loops. `failure_model_scores` holds the scores of the newest fit; they rank only when that fit was
promoted (else the prior, `failure_scores`, ranks), and routing's `uncertain` share reads them either way.
"""
from sqlalchemy import Column, Float, Index, Integer, LargeBinary, String, Table, Text

from curation.store.tables import metadata

failure_models = Table(
    "failure_models",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),  # 1, 2, … one per fit
    Column("created_at", Text, nullable=False),
    Column("run_id", String(36)),
    Column("rule", Text, nullable=False),  # what counts as a failure, e.g. "helpfulness <= 1 or correctness <= 1"
    Column("n_ratings", Integer, nullable=False),
    Column("n_failures", Integer, nullable=False),
    Column("ratings_digest", String(64), nullable=False),  # sha256 over the (record_id, updated_at) pairs it saw
    Column("ratings_seen", Text),  # JSON list of the rating record ids it saw
    Column("ratings_until", Text),  # newest updated_at among them: a later rating means a refit is due
    Column("features", Text),  # JSON list of feature names
    Column("cv", Text),  # JSON: folds, grouping, model and prior AP, lift@k, Brier, calibration bins
    Column("promoted", Integer, nullable=False, default=0),  # 1 = beat the prior's AP, so it ranks
    Column("reason", Text),  # why it was or was not promoted
    Column("model", LargeBinary),  # the fitted estimator (joblib), to score conversations that arrive later
)

failure_model_scores = Table(
    "failure_model_scores",
    metadata,
    Column("conversation_id", String(200), primary_key=True),
    Column("model_version", Integer, nullable=False),
    Column("probability", Float, nullable=False),  # calibrated P(failure)
    Column("uncertainty", Float, nullable=False),  # 4·p·(1 − p): 1 at p = 0.5, 0 when sure
    Column("scored_at", Text, nullable=False),
    Index("ix_failure_model_scores_version", "model_version"),
)

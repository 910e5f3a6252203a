"""Tables of the learned failure model: versioned fits and the scores of the promoted one.

Revision ID: 0007
Revises: 0006
"""
import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "failure_models",
        sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("created_at", sa.Text, nullable=False),
        sa.Column("run_id", sa.String(36)),
        sa.Column("rule", sa.Text, nullable=False),
        sa.Column("n_ratings", sa.Integer, nullable=False),
        sa.Column("n_failures", sa.Integer, nullable=False),
        sa.Column("ratings_digest", sa.String(64), nullable=False),
        sa.Column("ratings_seen", sa.Text),
        sa.Column("ratings_until", sa.Text),
        sa.Column("features", sa.Text),
        sa.Column("cv", sa.Text),
        sa.Column("promoted", sa.Integer, nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("model", sa.LargeBinary),
    )
    op.create_table(
        "failure_model_scores",
        sa.Column("conversation_id", sa.String(200), primary_key=True),
        sa.Column("model_version", sa.Integer, nullable=False),
        sa.Column("probability", sa.Float, nullable=False),
        sa.Column("uncertainty", sa.Float, nullable=False),
        sa.Column("scored_at", sa.Text, nullable=False),
    )
    op.create_index("ix_failure_model_scores_version", "failure_model_scores", ["model_version"])


def downgrade() -> None:
    op.drop_index("ix_failure_model_scores_version", "failure_model_scores")
    op.drop_table("failure_model_scores")
    op.drop_table("failure_models")

"""Tables for clusters, cluster history, failure signals and the reward slot (find-the-failures stage).

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "clusters",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("label", sa.Text),
        sa.Column("keywords", sa.Text),
        sa.Column("examples", sa.Text),
        sa.Column("centroid", sa.LargeBinary),
        sa.Column("space", sa.Text),
        sa.Column("radius", sa.Float),
        sa.Column("size", sa.Integer),
        sa.Column("n_users", sa.Integer),
        sa.Column("created_run_id", sa.String(36)),
        sa.Column("updated_run_id", sa.String(36)),
        sa.Column("retired_run_id", sa.String(36)),
    )
    op.create_table(
        "cluster_assignments",
        sa.Column("conversation_id", sa.String(200), primary_key=True),
        sa.Column("cluster_id", sa.Integer, nullable=False),
        sa.Column("similarity", sa.Float),
        sa.Column("run_id", sa.String(36)),
        sa.Column("novel", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_index("ix_cluster_assignments_cluster", "cluster_assignments", ["cluster_id"])
    op.create_table(
        "cluster_history",
        sa.Column("run_id", sa.String(36), nullable=False),
        sa.Column("cluster_id", sa.Integer, nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("failure_rate", sa.Float),
        sa.Column("ci_low", sa.Float),
        sa.Column("ci_high", sa.Float),
        sa.Column("novel", sa.Integer),
        sa.Column("at", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("run_id", "cluster_id"),
    )
    op.create_table(
        "failure_scores",
        sa.Column("conversation_id", sa.String(200), primary_key=True),
        sa.Column("failure_score", sa.Float, nullable=False),
        sa.Column("signals", sa.Text),
        sa.Column("run_id", sa.String(36)),
        sa.Column("scored_at", sa.Text, nullable=False),
    )
    op.create_table(
        "rewards",
        sa.Column("conversation_id", sa.String(200), nullable=False),
        sa.Column("model_version", sa.String(200), nullable=False),
        sa.Column("reward", sa.Float, nullable=False),
        sa.Column("attributes", sa.Text),
        sa.Column("scored_at", sa.Text, nullable=False),
        sa.Column("run_id", sa.String(36)),
        sa.PrimaryKeyConstraint("conversation_id", "model_version"),
    )
    op.create_index("ix_rewards_model_version", "rewards", ["model_version"])


def downgrade() -> None:
    op.drop_table("rewards")
    op.drop_table("failure_scores")
    op.drop_table("cluster_history")
    op.drop_index("ix_cluster_assignments_cluster", table_name="cluster_assignments")
    op.drop_table("cluster_assignments")
    op.drop_table("clusters")

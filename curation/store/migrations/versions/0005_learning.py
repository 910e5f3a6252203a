"""Tables for preference exports, the reward-model registry and promotion decisions (loops stage).

Revision ID: 0005
Revises: 0004
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reward_models",
        sa.Column("version", sa.String(200), primary_key=True),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("base", sa.Text),
        sa.Column("loss", sa.String(32)),
        sa.Column("data_version", sa.String(64)),
        sa.Column("metrics", sa.Text),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Text, nullable=False),
        sa.Column("run_id", sa.String(36)),
    )
    op.create_index("ix_reward_models_status", "reward_models", ["status"])
    op.create_table(
        "promotions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("challenger", sa.String(200), nullable=False),
        sa.Column("champion", sa.String(200)),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("figures", sa.Text),
        sa.Column("decided_at", sa.Text, nullable=False),
    )
    op.create_table(
        "preference_exports",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("out", sa.Text, nullable=False),
        sa.Column("pairs", sa.Integer, nullable=False),
        sa.Column("train", sa.Integer, nullable=False),
        sa.Column("test", sa.Integer, nullable=False),
        sa.Column("manifest", sa.Text),
        sa.Column("created_at", sa.Text, nullable=False),
        sa.Column("run_id", sa.String(36)),
    )


def downgrade() -> None:
    op.drop_table("preference_exports")
    op.drop_table("promotions")
    op.drop_index("ix_reward_models_status", table_name="reward_models")
    op.drop_table("reward_models")

"""Conversations, their feedback events, and the runs that wrote them.

Revision ID: 0001
Revises:
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("started_at", sa.Text, nullable=False),
        sa.Column("finished_at", sa.Text),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("params", sa.Text),
        sa.Column("summary", sa.Text),
    )
    op.create_table(
        "conversations",
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("messages", sa.Text, nullable=False),
        sa.Column("model", sa.String(200)),
        sa.Column("created_at", sa.Text),
        sa.Column("session_id", sa.String(200)),
        sa.Column("user_hash", sa.String(64)),
        sa.Column("metadata", sa.Text),
        sa.Column("n_messages", sa.Integer, nullable=False),
        sa.Column("source", sa.Text),
        sa.Column("run_id", sa.String(36)),
        sa.Column("ingested_at", sa.Text, nullable=False),
    )
    op.create_table(
        "feedback",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("conversation_id", sa.String(200), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("value", sa.Text),
        sa.Column("turn", sa.Integer),
        sa.Column("at", sa.Text),
        sa.Column("run_id", sa.String(36)),
    )
    op.create_index("ix_feedback_conversation", "feedback", ["conversation_id"])


def downgrade() -> None:
    op.drop_table("feedback")
    op.drop_table("conversations")
    op.drop_table("runs")

"""The LLM judge's ratings, kept apart from human ratings.

Revision ID: 0008
Revises: 0007
"""
import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "judgements",
        sa.Column("conversation_id", sa.String(200), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),  # the conversation content as judged
        sa.Column("model", sa.Text, nullable=False),
        sa.Column("rubric_version", sa.String(64), nullable=False),  # the rubric file's hash
        sa.Column("endpoint", sa.Text),  # the URL that answered, without credentials or query string
        sa.Column("helpfulness", sa.Integer),
        sa.Column("correctness", sa.Integer),
        sa.Column("coherence", sa.Integer),
        sa.Column("complexity", sa.Integer),
        sa.Column("verbosity", sa.Integer),
        sa.Column("rationale", sa.Text),
        sa.Column("status", sa.String(16), nullable=False),  # ok | unparseable | failed
        sa.Column("tokens", sa.Integer),
        sa.Column("judged_at", sa.Text, nullable=False),
        sa.Column("run_id", sa.String(36)),
        sa.PrimaryKeyConstraint("conversation_id", "content_hash", "model", "rubric_version"),
    )
    op.create_index("ix_judgements_conversation", "judgements", ["conversation_id"])


def downgrade() -> None:
    op.drop_index("ix_judgements_conversation", "judgements")
    op.drop_table("judgements")

"""Tables for vectors of conversations per embedding space (find-the-failures stage, embed).

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "embedding_spaces",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(400), nullable=False, unique=True),
        sa.Column("model", sa.Text, nullable=False),
        sa.Column("view", sa.String(64), nullable=False),
        sa.Column("backend", sa.String(32), nullable=False),
        sa.Column("dim", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Text, nullable=False),
        sa.Column("updated_at", sa.Text, nullable=False),
        sa.Column("run_id", sa.String(36)),
    )
    op.create_table(
        "embeddings",
        sa.Column("space_id", sa.Integer, primary_key=True),
        sa.Column("conversation_id", sa.String(200), primary_key=True),
        sa.Column("vector", sa.LargeBinary, nullable=False),
        sa.Column("text_hash", sa.String(32), nullable=False),
        sa.Column("run_id", sa.String(36)),
        sa.Column("embedded_at", sa.Text, nullable=False),
    )
    op.create_index("ix_embeddings_text_hash", "embeddings", ["space_id", "text_hash"])


def downgrade() -> None:
    op.drop_index("ix_embeddings_text_hash", table_name="embeddings")
    op.drop_table("embeddings")
    op.drop_table("embedding_spaces")

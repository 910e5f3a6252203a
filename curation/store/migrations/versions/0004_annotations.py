"""Tables for annotation records, raw responses and consensus ratings (annotations stage).

Revision ID: 0004
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

ATTRIBUTES = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")


def upgrade() -> None:
    op.create_table(
        "annotation_records",
        sa.Column("record_id", sa.String(420), primary_key=True),
        sa.Column("dataset", sa.String(200), nullable=False),
        sa.Column("conversation_id", sa.String(200), nullable=False),
        sa.Column("conversation_id_b", sa.String(200)),
        sa.Column("priority", sa.Float),
        sa.Column("strategy", sa.String(32)),
        sa.Column("pushed_at", sa.Text, nullable=False),
        sa.Column("run_id", sa.String(36)),
    )
    op.create_index("ix_annotation_records_dataset", "annotation_records", ["dataset"])
    op.create_index("ix_annotation_records_conversation", "annotation_records", ["conversation_id"])
    op.create_table(
        "rating_responses",
        sa.Column("id", sa.String(640), primary_key=True),
        sa.Column("dataset", sa.String(200), nullable=False),
        sa.Column("record_id", sa.String(420), nullable=False),
        sa.Column("conversation_id", sa.String(200), nullable=False),
        sa.Column("conversation_id_b", sa.String(200)),
        sa.Column("annotator", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        *(sa.Column(name, sa.Float) for name in ATTRIBUTES),
        sa.Column("preference", sa.Integer),
        sa.Column("justification", sa.Text),
        sa.Column("rewrite", sa.Text),
        sa.Column("updated_at", sa.Text),
        sa.Column("pulled_at", sa.Text, nullable=False),
        sa.Column("run_id", sa.String(36)),
    )
    op.create_index("ix_rating_responses_record", "rating_responses", ["record_id"])
    op.create_index("ix_rating_responses_dataset", "rating_responses", ["dataset", "updated_at"])
    op.create_table(
        "ratings",
        sa.Column("record_id", sa.String(420), primary_key=True),
        sa.Column("dataset", sa.String(200), nullable=False),
        sa.Column("conversation_id", sa.String(200), nullable=False),
        sa.Column("conversation_id_b", sa.String(200)),
        sa.Column("n_annotators", sa.Integer, nullable=False),
        *(sa.Column(name, sa.Float) for name in ATTRIBUTES),
        sa.Column("preference", sa.Float),
        sa.Column("disagreement", sa.Integer, nullable=False, server_default="0"),
        sa.Column("annotators", sa.Text),
        sa.Column("run_id", sa.String(36)),
        sa.Column("updated_at", sa.Text, nullable=False),
    )
    op.create_index("ix_ratings_dataset", "ratings", ["dataset"])
    op.create_table(
        "annotation_sync",
        sa.Column("dataset", sa.String(200), primary_key=True),
        sa.Column("responses_since", sa.Text),
        sa.Column("pulled_at", sa.Text),
        sa.Column("run_id", sa.String(36)),
    )


def downgrade() -> None:
    op.drop_table("annotation_sync")
    op.drop_index("ix_ratings_dataset", table_name="ratings")
    op.drop_table("ratings")
    op.drop_index("ix_rating_responses_dataset", table_name="rating_responses")
    op.drop_index("ix_rating_responses_record", table_name="rating_responses")
    op.drop_table("rating_responses")
    op.drop_index("ix_annotation_records_conversation", table_name="annotation_records")
    op.drop_index("ix_annotation_records_dataset", table_name="annotation_records")
    op.drop_table("annotation_records")

"""Tables for loop runs, their steps, the loop lock and the ingest watermark (periodic loop).

Revision ID: 0006
Revises: 0005
"""
import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "loop_runs",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("loop", sa.String(100), nullable=False),
        sa.Column("config", sa.Text),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("started_at", sa.Text, nullable=False),
        sa.Column("finished_at", sa.Text),
        sa.Column("pid", sa.Integer),
        sa.Column("host", sa.String(200)),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="1"),
        sa.Column("summary", sa.Text),
    )
    op.create_index("ix_loop_runs_loop", "loop_runs", ["loop", "started_at"])
    op.create_table(
        "loop_steps",
        sa.Column("run_id", sa.String(36), nullable=False),
        sa.Column("step", sa.String(32), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("started_at", sa.Text),
        sa.Column("finished_at", sa.Text),
        sa.Column("seconds", sa.Float),
        sa.Column("figures", sa.Text),
        sa.Column("message", sa.Text),
        sa.PrimaryKeyConstraint("run_id", "step"),
    )
    op.create_table(
        "loop_locks",
        sa.Column("loop", sa.String(100), primary_key=True),
        sa.Column("run_id", sa.String(36), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("host", sa.String(200), nullable=False),
        sa.Column("acquired_at", sa.Text, nullable=False),
        sa.Column("heartbeat_at", sa.Text, nullable=False),
    )
    op.create_table(
        "loop_files",
        sa.Column("loop", sa.String(100), nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("mtime", sa.Float, nullable=False),
        sa.Column("run_id", sa.String(36), nullable=False),
        sa.Column("ingested_at", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("loop", "path"),
    )


def downgrade() -> None:
    op.drop_table("loop_files")
    op.drop_table("loop_locks")
    op.drop_table("loop_steps")
    op.drop_index("ix_loop_runs_loop", "loop_runs")
    op.drop_table("loop_runs")

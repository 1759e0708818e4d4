"""schedules: definitions (the API's), firing state (the grain's), runs on tasks

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from services.store.types import Timestamp

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "schedules",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("pipeline_id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(40), nullable=False),
        sa.Column("spec_json", sa.Text(), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.UniqueConstraint("pipeline_id", "name", name="uq_schedules_pipeline_name"),
    )
    op.create_table(
        "schedule_state",
        sa.Column("schedule_id", sa.String(36), primary_key=True),
        sa.Column("pipeline_id", sa.String(36), nullable=False),
        sa.Column("state_json", sa.Text(), nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.Index("ix_schedule_state_pipeline", "pipeline_id"),
    )
    # Nullable, no default: metadata only on TiDB. No index: a run's id starts with its
    # schedule's id, so the primary key finds a schedule's runs, and every task insert is
    # spared an index entry.
    op.add_column("tasks", sa.Column("schedule_id", sa.String(36), nullable=True))
    op.add_column("tasks", sa.Column("fire_at", Timestamp, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_column("fire_at")
        batch_op.drop_column("schedule_id")
    op.drop_table("schedule_state")
    op.drop_table("schedules")

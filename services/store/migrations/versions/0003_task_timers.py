"""timers of tasks that are not due yet

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from services.store.types import Timestamp

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A table of its own rather than an index on tasks.due_at: TiDB has no partial
    # indexes, and every immediate task would write an entry it never needs. The key is
    # the order the grain reads timers in, (pipeline, due time, task id).
    op.create_table(
        "task_timers",
        sa.Column("pipeline_id", sa.String(length=36), nullable=False),
        sa.Column("due_at", Timestamp, nullable=False),
        sa.Column("task_id", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("pipeline_id", "due_at", "task_id", name="pk_task_timers"),
    )


def downgrade() -> None:
    op.drop_table("task_timers")

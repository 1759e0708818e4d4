"""attempts that did not end their task

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from services.store.migrate import is_tidb
from services.store.types import Timestamp

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Written only when a task is retried: a task that succeeds at once writes nothing here
    # (its row holds its only attempt).
    op.create_table(
        "task_attempts",
        sa.Column("pipeline_id", sa.String(length=36), nullable=False),
        sa.Column("task_id", sa.String(length=128), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("worker", sa.String(length=255), nullable=True),
        sa.Column("started_at", Timestamp, nullable=True),
        sa.Column("ended_at", Timestamp, nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("expire_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("pipeline_id", "task_id", "attempt", name="pk_task_attempts"),
    )
    if is_tidb(op.get_bind()):
        op.execute(
            "ALTER TABLE task_attempts TTL = `expire_at` + INTERVAL 0 DAY "
            "TTL_ENABLE = 'ON' TTL_JOB_INTERVAL = '1h'"
        )


def downgrade() -> None:
    op.drop_table("task_attempts")

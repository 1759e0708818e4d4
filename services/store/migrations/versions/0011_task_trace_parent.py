"""a task's trace context: the traceparent of its submit span

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable, no default: metadata only on TiDB, no rewrite of the tasks table. NULL:
    # the task was submitted while the API did not trace.
    op.add_column("tasks", sa.Column("trace_parent", sa.String(128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_column("trace_parent")

"""a pipeline's execution timeout for its tasks' attempts

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable, no default: metadata only on TiDB; NULL is "the workers decide". A task's
    # own timeout needs no column: it is kept in tasks.policy_json with its retry policy.
    op.add_column("pipelines", sa.Column("execution_timeout_s", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("pipelines", schema=None) as batch_op:
        batch_op.drop_column("execution_timeout_s")

"""keep the worker token encrypted for deployers

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A nullable column without a default: an online, metadata-only change on TiDB, and a
    # plain ALTER TABLE ... ADD COLUMN on SQLite. Existing pipelines keep NULL: their
    # token was never stored and cannot be recovered (recreate them to deploy locally).
    op.add_column("pipelines", sa.Column("worker_token_enc", sa.String(length=512), nullable=True))


def downgrade() -> None:
    # SQLite before 3.35 cannot drop a column: batch mode copies the table there.
    with op.batch_alter_table("pipelines", schema=None) as batch_op:
        batch_op.drop_column("worker_token_enc")

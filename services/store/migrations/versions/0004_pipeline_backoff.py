"""a pipeline's backoff between attempts

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable, no default: an online, metadata-only change on TiDB. NULL is the default
    # backoff, so existing pipelines need no rewrite.
    op.add_column("pipelines", sa.Column("backoff_json", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("pipelines", schema=None) as batch_op:
        batch_op.drop_column("backoff_json")

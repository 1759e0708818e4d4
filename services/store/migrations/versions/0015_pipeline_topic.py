"""a pipeline's topic (design D3): a topic of its own, or its shard's partition of the
shared topic; chosen at creation, never changed

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A constant default: metadata only on TiDB, and every pipeline made before this
    # revision has a topic of its own, so "dedicated" is what it already is.
    op.add_column(
        "pipelines",
        sa.Column("topic", sa.String(16), nullable=False, server_default="dedicated"),
    )


def downgrade() -> None:
    with op.batch_alter_table("pipelines", schema=None) as batch_op:
        batch_op.drop_column("topic")

"""a pipeline's default deadline for its tasks

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable, no default: metadata only on TiDB; NULL is "no default deadline".
    op.add_column("pipelines", sa.Column("expires_after_s", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("pipelines", schema=None) as batch_op:
        batch_op.drop_column("expires_after_s")

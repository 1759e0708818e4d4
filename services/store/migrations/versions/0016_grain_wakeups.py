"""the wake-up index (design D4): a grain resting with timers or schedules says in its
fencing row when it must be active again, and in which placement shard

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from services.store.types import Timestamp

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable columns: metadata only on TiDB; every grain row made before this revision
    # belongs to a grain that never rested, so "no wake-up" is what it already is.
    op.add_column("grain_owners", sa.Column("shard", sa.SmallInteger, nullable=True))
    op.add_column("grain_owners", sa.Column("wake_at", Timestamp, nullable=True))
    op.create_index("ix_grain_owners_wake", "grain_owners", ["shard", "wake_at"])


def downgrade() -> None:
    op.drop_index("ix_grain_owners_wake", table_name="grain_owners")
    with op.batch_alter_table("grain_owners", schema=None) as batch_op:
        batch_op.drop_column("wake_at")
        batch_op.drop_column("shard")

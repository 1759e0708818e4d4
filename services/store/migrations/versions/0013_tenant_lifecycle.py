"""tenant lifecycle: API keys and worker tokens rotated with a grace period, tenant deletion

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from services.store.types import Timestamp

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable, no default: metadata only on TiDB. NULL is "no previous key / token" and,
    # for the namespace, "wsched-<name>" (every tenant created before this revision).
    op.add_column("tenants", sa.Column("previous_key_hash", sa.String(64), nullable=True))
    op.add_column("tenants", sa.Column("previous_key_until", Timestamp, nullable=True))
    op.add_column("tenants", sa.Column("namespace", sa.String(63), nullable=True))
    op.create_index("ix_tenants_previous_key_hash", "tenants", ["previous_key_hash"])
    op.add_column("pipelines", sa.Column("previous_token_hash", sa.String(64), nullable=True))
    op.add_column("pipelines", sa.Column("previous_token_until", Timestamp, nullable=True))
    op.create_table(
        "tenant_deletions",
        sa.Column("tenant_id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(40), nullable=False),
        sa.Column("namespace", sa.String(63), nullable=False),
        sa.Column("step", sa.String(16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("pipelines_left", sa.Integer(), nullable=False),
        sa.Column("started_at", Timestamp, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.Column("finished_at", Timestamp, nullable=True),
        sa.Index("ix_tenant_deletions_namespace", "namespace"),
    )


def downgrade() -> None:
    op.drop_table("tenant_deletions")
    with op.batch_alter_table("pipelines", schema=None) as batch_op:
        batch_op.drop_column("previous_token_until")
        batch_op.drop_column("previous_token_hash")
    op.drop_index("ix_tenants_previous_key_hash", table_name="tenants")
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.drop_column("namespace")
        batch_op.drop_column("previous_key_until")
        batch_op.drop_column("previous_key_hash")

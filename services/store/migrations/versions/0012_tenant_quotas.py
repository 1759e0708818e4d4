"""tenants' quota overrides, and the shared submit-rate buckets

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_OVERRIDES = (
    ("quota_max_pipelines", sa.Integer()),
    ("quota_max_backlog", sa.BigInteger()),
    ("quota_submit_rate", sa.Float()),
    ("quota_submit_burst", sa.Integer()),
    ("quota_max_request_bytes", sa.BigInteger()),
)


def upgrade() -> None:
    # Nullable, no default: metadata only on TiDB; NULL is "the operator's default".
    for name, kind in _OVERRIDES:
        op.add_column("tenants", sa.Column(name, kind, nullable=True))
    op.create_table(
        "tenant_submit_buckets",
        sa.Column("tenant_id", sa.String(36), primary_key=True),
        sa.Column("tokens", sa.Float(precision=53), nullable=False),
        sa.Column("at_ms", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("tenant_submit_buckets")
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        for name, _kind in reversed(_OVERRIDES):
            batch_op.drop_column(name)

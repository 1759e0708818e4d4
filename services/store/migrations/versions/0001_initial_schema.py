"""initial schema

Revision ID: 0001
Revises: (none)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from services.store.migrate import is_tidb
from services.store.types import Blob, JsonText, NonClusteredPrimaryKey, Timestamp

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "applications",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tenant_id", "name", name="uq_applications_tenant_name"),
    )
    op.create_table(
        "grain_offsets",
        sa.Column("grain_id", sa.String(length=64), nullable=False),
        sa.Column("topic_partition", sa.Integer(), nullable=False),
        sa.Column("next_offset", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("grain_id", "topic_partition", name="pk_grain_offsets"),
    )
    op.create_table(
        "grain_owners",
        sa.Column("grain_id", sa.String(length=64), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("owner", sa.String(length=255), nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("grain_id"),
    )
    op.create_table(
        "pipeline_stats",
        sa.Column("pipeline_id", sa.String(length=36), nullable=False),
        sa.Column("counts_json", JsonText, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("pipeline_id"),
    )
    op.create_table(
        "pipelines",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("application_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("live_name", sa.String(length=40), nullable=True),
        sa.Column("chart", sa.String(length=1024), nullable=False),
        sa.Column("chart_version", sa.String(length=128), nullable=True),
        sa.Column("values_json", JsonText, nullable=False),
        sa.Column("partitions", sa.Integer(), nullable=False),
        sa.Column("scaling_json", JsonText, nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("lease_timeout_s", sa.Integer(), nullable=False),
        sa.Column("retention_s", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("state_reason", sa.Text(), nullable=False),
        sa.Column("deployment_json", JsonText, nullable=False),
        sa.Column("worker_token_hash", sa.String(length=64), nullable=False),
        sa.Column("shard", sa.Integer(), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("application_id", "live_name", name="uq_pipelines_app_live_name"),
    )
    with op.batch_alter_table("pipelines", schema=None) as batch_op:
        batch_op.create_index("ix_pipelines_shard", ["shard"], unique=False)

    op.create_table(
        "quarantine",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("pipeline_id", sa.String(length=36), nullable=False),
        sa.Column("topic_partition", sa.Integer(), nullable=False),
        sa.Column("record_offset", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("raw", Blob, nullable=False),
        sa.Column("quarantined_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "pipeline_id", "topic_partition", "record_offset", name="uq_quarantine_record"
        ),
    )

    op.create_table(
        "task_results",
        sa.Column("pipeline_id", sa.String(length=36), nullable=False),
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("result", Blob, nullable=False),
        sa.Column("expire_at", Timestamp, nullable=True),
        NonClusteredPrimaryKey("pipeline_id", "id", name="pk_task_results"),
    )
    op.create_table(
        "tasks",
        sa.Column("pipeline_id", sa.String(length=36), nullable=False),
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("due_at", Timestamp, nullable=False),
        sa.Column("data", Blob, nullable=False),
        sa.Column("data_sha256", sa.LargeBinary(length=32), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("started_at", Timestamp, nullable=True),
        sa.Column("finished_at", Timestamp, nullable=True),
        sa.Column("worker", sa.String(length=255), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("lease_epoch", sa.BigInteger(), nullable=True),
        sa.Column("expire_at", Timestamp, nullable=True),
        sa.Column("updated_at", Timestamp, nullable=False),
        NonClusteredPrimaryKey("pipeline_id", "id", name="pk_tasks"),
    )
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.create_index(
            "ix_tasks_pipeline_status_id", ["pipeline_id", "status", "id"], unique=False
        )

    op.create_table(
        "tenants",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("api_key_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("api_key_hash"),
        sa.UniqueConstraint("name"),
    )

    _tidb_storage_options()


def _tidb_storage_options() -> None:
    """Scatter the row ids of the write-heavy tables; let TiDB's TTL purge finished tasks.

    Other databases get neither: SQLite is purged in batches by the scheduler.
    """
    if not is_tidb(op.get_bind()):
        return
    for table in ("tasks", "task_results"):
        op.execute(f"ALTER TABLE {table} SHARD_ROW_ID_BITS = 4")
        op.execute(
            f"ALTER TABLE {table} TTL = `expire_at` + INTERVAL 0 DAY "
            "TTL_ENABLE = 'ON' TTL_JOB_INTERVAL = '1h'"
        )


def downgrade() -> None:
    op.drop_table("tenants")
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_index("ix_tasks_pipeline_status_id")

    op.drop_table("tasks")
    op.drop_table("task_results")
    op.drop_table("quarantine")
    with op.batch_alter_table("pipelines", schema=None) as batch_op:
        batch_op.drop_index("ix_pipelines_shard")

    op.drop_table("pipelines")
    op.drop_table("pipeline_stats")
    op.drop_table("grain_owners")
    op.drop_table("grain_offsets")
    op.drop_table("applications")

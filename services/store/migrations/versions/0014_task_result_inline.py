"""the result inline in the task row (design D1): one write fewer per finished task

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from services.store.types import Blob, NonClusteredPrimaryKey, Timestamp

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

#: Rows copied per statement: a copy of millions of results in one transaction would pass
#: TiDB's transaction size limit.
_COPY_BATCH = 1000

_tasks = sa.table(
    "tasks",
    sa.column("pipeline_id", sa.String),
    sa.column("id", sa.String),
    sa.column("result", sa.LargeBinary),
)
_results = sa.table(
    "task_results",
    sa.column("pipeline_id", sa.String),
    sa.column("id", sa.String),
    sa.column("result", sa.LargeBinary),
)


def upgrade() -> None:
    # Nullable, no default: metadata only on TiDB. NULL is "no result" (not finished, or
    # finished without one).
    op.add_column("tasks", sa.Column("result", Blob, nullable=True))
    _copy_results(op.get_bind())
    op.drop_table("task_results")


def _copy_results(conn: sa.Connection) -> None:
    after: tuple[str, str] | None = None
    while True:
        page = sa.select(_results.c.pipeline_id, _results.c.id, _results.c.result)
        if after is not None:
            page = page.where(sa.tuple_(_results.c.pipeline_id, _results.c.id) > sa.tuple_(*after))
        rows = conn.execute(
            page.order_by(_results.c.pipeline_id, _results.c.id).limit(_COPY_BATCH)
        ).all()
        if not rows:
            break
        conn.execute(
            sa.update(_tasks)
            .where(
                _tasks.c.pipeline_id == sa.bindparam("p"),
                _tasks.c.id == sa.bindparam("i"),
            )
            .values(result=sa.bindparam("r")),
            [{"p": row.pipeline_id, "i": row.id, "r": row.result} for row in rows],
        )
        after = (rows[-1].pipeline_id, rows[-1].id)
        if conn.dialect.name == "mysql":
            # Each batch commits on its own: a copy of every result in one transaction
            # would pass TiDB's transaction size limit on a big table. The DDL around it
            # commits implicitly on MySQL and TiDB anyway; a crash midway copies again.
            conn.exec_driver_sql("COMMIT")


def downgrade() -> None:
    op.create_table(
        "task_results",
        sa.Column("pipeline_id", sa.String(36), nullable=False),
        sa.Column("id", sa.String(128), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("result", Blob, nullable=False),
        sa.Column("expire_at", Timestamp, nullable=True),
        NonClusteredPrimaryKey("pipeline_id", "id", name="pk_task_results"),
    )
    op.execute(
        "INSERT INTO task_results (pipeline_id, id, attempt, result, expire_at) "
        "SELECT pipeline_id, id, attempt, result, expire_at FROM tasks WHERE result IS NOT NULL"
    )
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_column("result")

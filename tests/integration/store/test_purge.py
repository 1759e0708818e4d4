"""The batched purge of expired tasks on SQLite (TiDB purges through its TTL attribute)."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from services.store import migrate
from services.store.purge import needs_purge, purge_expired
from services.store.schema import task_attempts, tasks

pytestmark = pytest.mark.integration
NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)


def test_expired_rows_go_in_batches_and_the_rest_stays(sqlite_url: str) -> None:
    engine = sa.create_engine(sqlite_url)
    migrate.upgrade(engine)
    naive = NOW.replace(tzinfo=None)
    rows = []
    for i in range(25):
        expire = (
            naive - dt.timedelta(hours=1)
            if i < 15
            else (naive + dt.timedelta(hours=1) if i < 20 else None)
        )
        rows.append(
            {
                "pipeline_id": "p",
                "id": f"t{i}",
                "attempt": 1,
                "status": "succeeded",
                "due_at": naive,
                "data": b"{}",
                "data_sha256": b"x" * 32,
                "created_at": naive,
                "updated_at": naive,
                "expire_at": expire,
                "result": b"r" if i % 2 else None,
            }
        )
    with engine.begin() as conn:
        conn.execute(sa.insert(tasks), rows)
        conn.execute(
            sa.insert(task_attempts),
            [
                {
                    "pipeline_id": "p",
                    "task_id": f"t{i}",
                    "attempt": 1,
                    "ended_at": naive,
                    "outcome": "failed",
                    "expire_at": naive + dt.timedelta(hours=-1 if i < 3 else 1),
                }
                for i in range(5)
            ],
        )
    assert needs_purge(engine)
    # 15 tasks (their results inline) + 3 attempts
    assert purge_expired(engine, now=NOW, batch=4) == 18
    with engine.connect() as conn:
        left = {r.id for r in conn.execute(sa.select(tasks.c.id))}
        results = conn.execute(
            sa.select(sa.func.count()).select_from(tasks).where(tasks.c.result.is_not(None))
        ).scalar()
        history = conn.execute(sa.select(sa.func.count()).select_from(task_attempts)).scalar()
    engine.dispose()
    assert left == {f"t{i}" for i in range(15, 25)} and results == 5 and history == 2


def test_tidb_needs_no_purge(tidb_url: str) -> None:
    engine = sa.create_engine(tidb_url)
    assert not needs_purge(engine)
    engine.dispose()

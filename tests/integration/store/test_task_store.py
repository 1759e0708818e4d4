"""The grain's store on TiDB and on SQLite keeps the store contract (``tests/ports``)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
import sqlalchemy as sa

from actors.pipeline.book import TaskBook
from actors.pipeline.model import GrainKey, Outcome, PipelineConfig, Report
from services.store.schema import grain_owners, schedules, task_attempts, tasks
from services.store.sql import duplicates_fail_at_once, from_db_required
from services.store.tasks import SqlTaskStore
from tests.ports.task_store import (
    GRAIN,
    NOW,
    PIPELINE,
    AttemptsContract,
    RetryPolicyContract,
    ScheduleContract,
    StoredTask,
    TaskStoreContract,
    TimerContract,
    claim_and_admit,
    new,
    stored,
)

pytestmark = pytest.mark.integration


class SqlStoreUnderTest:
    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine
        self.store = SqlTaskStore(engine=engine, clock=lambda: NOW)

    async def tasks(self) -> dict[str, StoredTask]:
        with self._engine.connect() as conn:
            rows = conn.execute(sa.select(tasks)).all()
        return {row.id: stored(row) for row in rows}

    async def results(self) -> list[tuple[str, bytes]]:
        with self._engine.connect() as conn:
            rows = conn.execute(
                sa.select(tasks.c.id, tasks.c.result)
                .where(tasks.c.result.is_not(None))
                .order_by(tasks.c.id)
            ).all()
        return [(row.id, row.result) for row in rows]

    async def attempts(self) -> list[tuple[str, int, str, str | None]]:
        with self._engine.connect() as conn:
            rows = conn.execute(
                sa.select(
                    task_attempts.c.task_id,
                    task_attempts.c.attempt,
                    task_attempts.c.outcome,
                    task_attempts.c.error,
                ).order_by(task_attempts.c.task_id, task_attempts.c.attempt)
            ).all()
        return [(row.task_id, row.attempt, row.outcome, row.error) for row in rows]

    async def define_schedule(self, *, schedule_id: str, version: int, doc: dict[str, Any]) -> None:
        with self._engine.begin() as conn:
            conn.execute(
                sa.insert(schedules).values(
                    id=schedule_id,
                    pipeline_id=PIPELINE,
                    name=schedule_id,
                    spec_json=json.dumps(doc),
                    paused=False,
                    version=version,
                    created_at=NOW.replace(tzinfo=None),
                    updated_at=NOW.replace(tzinfo=None),
                )
            )

    async def wake_ups(self) -> dict[GrainKey, dt.datetime]:
        query = sa.select(grain_owners.c.grain_id, grain_owners.c.wake_at).where(
            grain_owners.c.wake_at.is_not(None)
        )
        with self._engine.connect() as conn:
            rows = conn.execute(query).all()
        return {GrainKey.parse(row.grain_id): from_db_required(row.wake_at) for row in rows}


class TestSqlTaskStore(
    TaskStoreContract, TimerContract, AttemptsContract, RetryPolicyContract, ScheduleContract
):
    @pytest.fixture
    def under_test(self, engine: sa.Engine) -> SqlStoreUnderTest:
        return SqlStoreUnderTest(engine)


async def test_flush_cuts_worker_and_error_to_their_columns(engine: sa.Engine) -> None:
    """Defence in depth: the worker API bounds both, but a value TiDB refuses would fail
    every flush of the grain and stop its pipeline."""
    store = SqlTaskStore(engine=engine, clock=lambda: NOW)
    epoch, admission = await claim_and_admit(store, new(1), new(2))
    book = TaskBook(config=PipelineConfig(pipeline_id=GRAIN.pipeline_id), epoch=epoch)
    book.admit(admission.admitted)
    worker = "w" * 100_000
    failed, _ = book.lease(worker=worker, max_tasks=2, max_bytes=1 << 20, now=0, wall=NOW)
    error = "é" * 40_000 + "the cause"  # 80,009 bytes, over TEXT's 65,535
    final = Report(token=failed.token, outcome=Outcome.FAILED, error=error, non_retryable=True)
    book.report(final, wall=NOW)
    await store.flush(
        grain=GRAIN, epoch=epoch, flush=book.take_flush(), stats=book.stats(), now=NOW
    )
    with engine.connect() as conn:
        rows = {r.id: r for r in conn.execute(sa.select(tasks.c.id, tasks.c.worker, tasks.c.error))}
    assert {row.worker for row in rows.values()} == {worker[:255]}
    cut = rows[failed.task.id].error
    assert cut.endswith("the cause") and 65_000 < len(cut.encode()) <= 65_535


def test_tidb_fails_a_duplicate_insert_at_once_so_admission_skips_its_lookup(
    engine: sa.Engine,
) -> None:
    """The provisioned TiDB (pessimistic, in-place checks) takes admission's fast path, so
    the contract's replays above exercise its savepoint and fallback; an optimistic
    session would not (its duplicates fail at commit)."""
    with engine.connect() as conn:
        assert duplicates_fail_at_once(conn) is (engine.dialect.name == "mysql")
    if engine.dialect.name != "mysql":
        return  # SQLite always looks the ids up first
    optimistic = sa.create_engine(
        engine.url, connect_args={"init_command": "SET SESSION tidb_txn_mode = 'optimistic'"}
    )
    try:
        with optimistic.connect() as conn:
            assert duplicates_fail_at_once(conn) is False
    finally:
        optimistic.dispose()

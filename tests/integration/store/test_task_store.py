"""The grain's store on TiDB and on SQLite: fencing, admission, paging, flushing."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from actors.pipeline.book import TaskBook
from actors.pipeline.model import GrainKey, NewTask, Outcome, PipelineConfig, Report, Status
from actors.pipeline.ports import StaleEpoch
from services.store import migrate
from services.store.schema import task_results, tasks
from services.store.tasks import SqlTaskStore

pytestmark = pytest.mark.integration
NOW = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)
PIPELINE = "0190-pipeline"
GRAIN = GrainKey(pipeline_id=PIPELINE)


def new(i: int, data: bytes = b'{"n":1}') -> NewTask:
    return NewTask(
        id=f"task-{i:05d}",
        data=data,
        data_sha256=hashlib.sha256(data).digest(),
        due_at=NOW,
        created_at=NOW,
    )


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(database_url)
    migrate.upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def store(engine: sa.Engine) -> SqlTaskStore:
    return SqlTaskStore(engine=engine, clock=lambda: NOW)


async def test_claim_increments_the_epoch_and_fences_the_old_owner(store: SqlTaskStore) -> None:
    first = await store.claim(grain=GRAIN, owner="replica-a")
    second = await store.claim(grain=GRAIN, owner="replica-b")
    assert second == first + 1
    with pytest.raises(StaleEpoch):
        await store.admit(
            grain=GRAIN,
            epoch=first,
            tasks=[new(1)],
            offsets={0: 1},
            now=NOW,
        )
    assert await store.page_queued(grain=GRAIN, after="", limit=10) == []


async def test_admit_is_idempotent_and_reports_conflicts(store: SqlTaskStore) -> None:
    epoch = await store.claim(grain=GRAIN, owner="a")
    first = await store.admit(
        grain=GRAIN,
        epoch=epoch,
        tasks=[new(1), new(2), new(1)],
        offsets={0: 3},
        now=NOW,
    )
    assert [t.id for t in first.admitted] == ["task-00001", "task-00002"]
    again = await store.admit(
        grain=GRAIN,
        epoch=epoch,
        tasks=[new(1), new(2, b'{"n":2}'), new(3)],
        offsets={0: 6},
        now=NOW,
    )
    assert [t.id for t in again.admitted] == ["task-00003"]
    assert again.duplicates == ["task-00001"] and again.conflicts == ["task-00002"]
    loaded = await store.load(grain=GRAIN)
    assert loaded.offsets == {0: 6} and loaded.counts == {Status.QUEUED: 3}


async def test_page_queued_walks_ids_in_order(store: SqlTaskStore) -> None:
    epoch = await store.claim(grain=GRAIN, owner="a")
    await store.admit(
        grain=GRAIN,
        epoch=epoch,
        tasks=[new(i) for i in range(7)],
        offsets={},
        now=NOW,
    )
    page = await store.page_queued(grain=GRAIN, after="", limit=4)
    rest = await store.page_queued(grain=GRAIN, after=page[-1].id, limit=4)
    assert [t.id for t in page + rest] == [f"task-{i:05d}" for i in range(7)]
    assert page[0].data == b'{"n":1}' and page[0].due_at == NOW


async def test_flush_writes_leases_results_and_counters_then_reload(
    store: SqlTaskStore, engine: sa.Engine
) -> None:
    epoch = await store.claim(grain=GRAIN, owner="a")
    admission = await store.admit(
        grain=GRAIN,
        epoch=epoch,
        tasks=[new(1), new(2)],
        offsets={},
        now=NOW,
    )
    book = TaskBook(config=PipelineConfig(pipeline_id=PIPELINE), epoch=epoch)
    book.admit(admission.admitted)
    done, running = book.lease(worker="w1", max_tasks=2, max_bytes=1 << 20, now=0, wall=NOW)
    book.report(Report(token=done.token, outcome=Outcome.SUCCEEDED, result=b"ok"), wall=NOW)
    await store.flush(
        grain=GRAIN,
        epoch=epoch,
        flush=book.take_flush(),
        stats=book.stats(),
        now=NOW,
    )
    with engine.connect() as conn:
        rows = {r.id: r.status for r in conn.execute(sa.select(tasks.c.id, tasks.c.status))}
        results = conn.execute(sa.select(task_results.c.id, task_results.c.result)).all()
        data = conn.execute(sa.select(tasks.c.data).where(tasks.c.id == "task-00001")).scalar()
    assert rows == {"task-00001": "succeeded", "task-00002": "leased"}
    assert [tuple(r) for r in results] == [("task-00001", b"ok")]
    assert data == b'{"n":1}'  # the upsert never overwrites the task's data
    # a new incarnation takes over the lease with the old token
    new_epoch = await store.claim(grain=GRAIN, owner="b")
    loaded = await store.load(grain=GRAIN)
    assert [t.id for t in loaded.leased] == ["task-00002"]
    assert loaded.leased[0].lease_epoch == epoch and new_epoch == epoch + 1
    with pytest.raises(StaleEpoch):
        await store.flush(
            grain=GRAIN,
            epoch=epoch,
            flush=book.take_flush(),
            stats=book.stats(),
            now=NOW,
        )
    assert running.token.epoch == epoch


async def test_cancel_queued_and_requeue_dead(store: SqlTaskStore, engine: sa.Engine) -> None:
    epoch = await store.claim(grain=GRAIN, owner="a")
    await store.admit(
        grain=GRAIN,
        epoch=epoch,
        tasks=[new(1), new(2)],
        offsets={},
        now=NOW,
    )
    cancelled = await store.cancel_queued(
        grain=GRAIN,
        epoch=epoch,
        task_ids=["task-00001", "nope"],
        now=NOW,
        retention_s=60,
    )
    assert cancelled == 1
    with engine.begin() as conn:
        conn.execute(
            sa.update(tasks).where(tasks.c.id == "task-00002").values(status="dead", attempt=3)
        )
    requeued = await store.requeue_dead(
        grain=GRAIN,
        epoch=epoch,
        task_ids=["task-00002", "task-00001"],
        now=NOW,
    )
    assert [(t.id, t.attempt, t.status) for t in requeued] == [("task-00002", 1, Status.QUEUED)]

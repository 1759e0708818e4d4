"""Live results (D6): the core publishes what its committed writes changed, never more."""

from __future__ import annotations

import pytest

from actors.pipeline.core import PipelineCore
from actors.pipeline.events import PURGED
from actors.pipeline.memory import InMemoryEventSink, InMemoryTaskStore
from actors.pipeline.model import (
    AdmitBatch,
    Outcome,
    PipelineConfig,
    Purge,
    Report,
    Status,
)
from actors.pipeline.ports import StoreUnavailable
from tests.unit.actors.pipeline.test_core import KEY, T0, Clock, new


def core(store: InMemoryTaskStore, sink: InMemoryEventSink) -> PipelineCore:
    return PipelineCore(
        config=PipelineConfig(pipeline_id="p"),
        key=KEY,
        owner="a",
        store=store,
        clock=Clock().grain_clock(),
        events=sink,
    )


async def test_admission_publishes_the_admitted_tasks_with_the_counts() -> None:
    store, sink = InMemoryTaskStore(), InMemoryEventSink()
    g = core(store, sink)
    await g.activate()
    await g.admit(AdmitBatch(new=(new(1), new(2, due_in_s=60)), offsets={0: 2}))
    assert sink.changes() == [("t001", "queued", 1), ("t002", "scheduled", 1)]
    [batch] = sink.batches
    assert batch.grain == KEY
    assert batch.counts["queued"] == 1
    assert batch.counts["scheduled"] == 1


async def test_a_report_is_published_after_its_flush_commits() -> None:
    store, sink = InMemoryTaskStore(), InMemoryEventSink()
    g = core(store, sink)
    await g.activate()
    await g.admit(AdmitBatch(new=(new(1),)))
    [grant] = g.poll(worker="w", max_tasks=1, max_bytes=1 << 20).result()
    g.report([Report(token=grant.token, outcome=Outcome.SUCCEEDED, result=b"ok")])
    assert sink.changes() == [("t001", "queued", 1)]  # nothing before the commit
    await g.flush()
    assert sink.changes()[-1] == ("t001", "succeeded", 1)
    assert store.rows[("p", "t001")].status is Status.SUCCEEDED


async def test_a_failed_flush_publishes_nothing_and_the_retry_does() -> None:
    store, sink = InMemoryTaskStore(), InMemoryEventSink()
    g = core(store, sink)
    await g.activate()
    await g.admit(AdmitBatch(new=(new(1),)))
    [grant] = g.poll(worker="w", max_tasks=1, max_bytes=1 << 20).result()
    g.report([Report(token=grant.token, outcome=Outcome.SUCCEEDED)])
    before = len(sink.batches)
    store.down = True
    with pytest.raises(StoreUnavailable):
        await g.flush()
    assert len(sink.batches) == before
    store.down = False
    await g.flush()
    assert sink.changes()[-1] == ("t001", "succeeded", 1)


async def test_cancels_requeues_and_purges_are_published() -> None:
    store, sink = InMemoryTaskStore(), InMemoryEventSink()
    g = core(store, sink)
    await g.activate()
    await g.admit(AdmitBatch(new=(new(1), new(2, due_in_s=60))))
    await g.admit(AdmitBatch(cancels=("t002",)))
    await g.flush()
    # Cancelled in the store (a timer's task): the store does not say its attempt.
    assert ("t002", "cancelled", 0) in sink.changes()
    row = store.rows[("p", "t001")]
    row.status, row.finished_at = Status.DEAD, T0
    await g.admit(
        AdmitBatch(purges=(Purge(task_id="t001", finished_before=T0.replace(year=2027)),))
    )
    assert sink.changes()[-1] == ("t001", PURGED, 0)


async def test_a_sink_that_raises_never_fails_the_write() -> None:
    class Broken:
        def publish(self, batch: object) -> None:
            raise RuntimeError("broker gone")

    store = InMemoryTaskStore()
    g = PipelineCore(
        config=PipelineConfig(pipeline_id="p"),
        key=KEY,
        owner="a",
        store=store,
        clock=Clock().grain_clock(),
        events=Broken(),
    )
    await g.activate()
    result = await g.admit(AdmitBatch(new=(new(1),)))
    assert result.admitted == 1

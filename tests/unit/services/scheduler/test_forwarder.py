"""The forwarder on the in-memory consumer: batches, quarantine, commits, retries, fencing."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from actors.pipeline.model import AdmitBatch, AdmitResult
from actors.pipeline.ports import StaleEpoch, StoreUnavailable
from protos.wsched.v1 import events_pb2
from services.kafka.consumer import MemoryConsumer, MemoryLog
from services.scheduler.forwarder import Forwarder
from services.store.quarantine import Quarantined

PIPELINE = "p1"
#: Guard for awaiting an effect that needs no time to pass; only reached when broken.
GUARD_S = 2.0


def event(task_id: str, **kind: Any) -> bytes:
    return events_pb2.TaskEvent(
        schema_version=1, pipeline_id=PIPELINE, task_id=task_id, **kind
    ).SerializeToString()


def submit(task_id: str) -> bytes:
    return event(task_id, submit=events_pb2.SubmitTask(data=b"{}"))


def cancel(task_id: str) -> bytes:
    return event(task_id, cancel=events_pb2.CancelTask())


def requeue(task_id: str) -> bytes:
    return event(task_id, requeue=events_pb2.RequeueTask())


@dataclass(kw_only=True)
class Grain:
    """Admits what it is given, after raising ``failures`` one per call; notes what the
    consumer had done by the time each batch arrived."""

    consumer: MemoryConsumer
    failures: list[Exception] = field(default_factory=list)
    batches: list[AdmitBatch] = field(default_factory=list)
    admitted: list[AdmitBatch] = field(default_factory=list)
    fetches_seen: list[int] = field(default_factory=list)
    committed_seen: list[dict[int, int]] = field(default_factory=list)
    kept: list[Quarantined] = field(default_factory=list)

    async def admit(self, batch: AdmitBatch) -> AdmitResult:
        self.batches.append(batch)
        self.fetches_seen.append(self.consumer.fetches)
        self.committed_seen.append(dict(self.consumer.log.committed))
        if self.failures:
            raise self.failures.pop(0)
        self.admitted.append(batch)
        return AdmitResult(
            admitted=len(batch.new),
            duplicates=0,
            conflicts=0,
            cancelled=len(batch.cancels),
            requeued=len(batch.requeues),
        )

    async def keep(self, records: Sequence[Quarantined]) -> None:
        self.kept.extend(records)


class Harness:
    """A forwarder over a two-partition in-memory log, feeding a ``Grain``."""

    def __init__(self) -> None:
        self.log = MemoryLog(partitions=2)
        self.consumer = MemoryConsumer(log=self.log)
        self.grain = Grain(consumer=self.consumer)
        #: The backoff pauses the forwarder asked for; ``on_sleep`` runs at each.
        self.sleeps: list[float] = []
        self.on_sleep: Callable[[], object] = lambda: None
        self.forwarder = Forwarder(
            consumer=self.consumer,
            pipeline_id=PIPELINE,
            partitions=2,
            admit=self.grain.admit,
            keep=self.grain.keep,
            sleep=self.sleep,
            monotonic=lambda: 0.0,
        )

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.on_sleep()

    async def run_until(
        self, done: Callable[[], bool], start: dict[int, int] | None = None
    ) -> None:
        """Run the forwarder until ``done()``, then stop it (unless it stopped itself)."""
        task = asyncio.create_task(self.forwarder.run(start or {}))
        try:
            async with asyncio.timeout(GUARD_S):
                while not done() and not task.done():
                    await asyncio.sleep(0.001)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@pytest.fixture
def h() -> Harness:
    return Harness()


async def test_a_fetch_becomes_one_admit_batch_with_the_next_offsets(h: Harness) -> None:
    for value in (submit("t1"), submit("t2"), cancel("t1")):
        h.log.append(0, value)
    for value in (submit("t3"), requeue("t4")):
        h.log.append(1, value)
    await h.run_until(lambda: bool(h.grain.admitted))
    (batch,) = h.grain.batches
    assert [task.id for task in batch.new] == ["t1", "t2", "t3"]
    assert batch.cancels == ("t1",) and batch.requeues == ("t4",)
    assert batch.offsets == {0: 3, 1: 2}
    assert h.forwarder.stats.admitted == 3


async def test_undecodable_records_are_quarantined_and_skipped(h: Harness) -> None:
    h.log.append(0, b"\xff\xff\xff")
    h.log.append(0, submit("t1"))
    h.log.append(0, None)
    await h.run_until(lambda: bool(h.grain.admitted))
    (batch,) = h.grain.batches
    assert [task.id for task in batch.new] == ["t1"]
    assert batch.offsets == {0: 3}  # the next owner resumes past them too
    assert [(q.partition, q.offset) for q in h.grain.kept] == [(0, 0), (0, 2)]
    assert h.forwarder.stats.quarantined == 2


async def test_offsets_are_committed_only_after_the_admission(h: Harness) -> None:
    h.grain.failures = [StoreUnavailable("the store is down")]
    h.log.append(0, submit("t1"))
    await h.run_until(lambda: bool(h.log.committed))
    assert h.grain.committed_seen == [{}, {}]
    assert h.log.committed == {0: 1}


async def test_a_failed_admission_retries_the_same_batch_and_fetches_nothing_new(
    h: Harness,
) -> None:
    h.grain.failures = [StoreUnavailable("down"), StoreUnavailable("down"), TimeoutError()]
    h.log.append(0, submit("t1"))
    # Submissions keep arriving while the store is down; Kafka keeps them meanwhile.
    h.on_sleep = lambda: h.log.append(0, submit(f"late{len(h.sleeps)}"))
    await h.run_until(lambda: len(h.grain.admitted) == 2)
    first, *retries, later = h.grain.batches
    assert retries == [first, first, first]
    assert h.sleeps == [0.05, 0.1, 0.2]
    assert h.grain.fetches_seen[:4] == [1, 1, 1, 1]
    assert [task.id for task in later.new] == ["late1", "late2", "late3"]
    assert h.forwarder.stats.retries == 3


async def test_a_stale_epoch_stops_the_forwarder(h: Harness) -> None:
    h.grain.failures = [StaleEpoch("another replica owns the grain")]
    h.log.append(0, submit("t1"))
    task = asyncio.create_task(h.forwarder.run({}))
    await asyncio.wait_for(task, GUARD_S)  # returns by itself
    assert h.consumer.stopped
    assert h.log.committed == {} and h.sleeps == []


async def test_start_offsets_from_the_store_are_honoured(h: Harness) -> None:
    for i in range(5):
        h.log.append(0, submit(f"t{i}"))
    h.log.append(1, submit("t5"))
    h.log.append(1, submit("t6"))
    h.log.committed[1] = 1  # a partition the store has no offset for resumes from Kafka's
    await h.run_until(lambda: bool(h.grain.admitted), start={0: 3})
    (batch,) = h.grain.batches
    assert [task.id for task in batch.new] == ["t3", "t4", "t6"]
    assert batch.offsets == {0: 5, 1: 2}

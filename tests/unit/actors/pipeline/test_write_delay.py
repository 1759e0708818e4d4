"""The write delay (design D2) over the in-memory store: a short task is written once, at
its end; a task held past the delay is pinned; the stored offsets never pass a task that
has no row; replays and resubmits are told apart from new tasks."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import Counter
from collections.abc import Mapping, Sequence

import pytest

from actors.pipeline.book_flush import Flush
from actors.pipeline.core import PipelineCore
from actors.pipeline.memory import InMemoryTaskStore
from actors.pipeline.model import (
    AdmitBatch,
    GrainKey,
    Grant,
    NewTask,
    Outcome,
    Report,
    ReportAck,
    Status,
)
from actors.pipeline.ports import Admission, StaleEpoch, StoreUnavailable
from actors.pipeline.schedules import ScheduleState
from tests.unit.actors.pipeline.test_core import KEY, Clock, core, new

DELAY_S = 0.5


class Counting(InMemoryTaskStore):
    """Counts each task's row writes: admission inserts and flushed changes."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: Counter[str] = Counter()

    async def admit(
        self,
        *,
        grain: GrainKey,
        epoch: int,
        tasks: Sequence[NewTask],
        offsets: Mapping[int, int],
        now: dt.datetime,
        schedules: Sequence[ScheduleState] = (),
        dropped_schedules: Sequence[str] = (),
    ) -> Admission:
        admission = await super().admit(
            grain=grain, epoch=epoch, tasks=tasks, offsets=offsets, now=now
        )
        self.writes.update(task.id for task in admission.admitted)
        return admission

    async def flush(
        self,
        *,
        grain: GrainKey,
        epoch: int,
        flush: Flush,
        stats: Mapping[str, int],
        now: dt.datetime,
    ) -> None:
        await super().flush(grain=grain, epoch=epoch, flush=flush, stats=stats, now=now)
        self.writes.update(change.id for change in flush.changes)

    def status(self, task_id: str) -> Status:
        return self.rows[("p", task_id)].status


async def delayed(store: InMemoryTaskStore, clock: Clock, **cfg: float) -> PipelineCore:
    g = core(store, clock, "a", write_delay_s=DELAY_S, **cfg)
    await g.activate()
    return g


def take(g: PipelineCore, n: int = 10) -> list[Grant]:
    return g.poll(worker="w", max_tasks=n, max_bytes=1 << 20).result()


async def succeed(g: PipelineCore, grants: Sequence[Grant], result: bytes = b"ok") -> None:
    reports = [Report(token=gr.token, outcome=Outcome.SUCCEEDED, result=result) for gr in grants]
    acks, durable = g.report(reports)
    assert set(acks) == {ReportAck.ACCEPTED}
    await g.flush()
    await durable


async def test_a_short_task_is_written_once_at_its_end_with_its_data_and_result() -> None:
    store, clock = Counting(), Clock()
    g = await delayed(store, clock)
    result = await g.admit(AdmitBatch(new=(new(1),), offsets={0: 8}))
    assert result.admitted == 1
    assert ("p", "t001") not in store.rows and not store.offsets.get(KEY)  # nothing written yet
    await succeed(g, take(g))
    row = store.rows[("p", "t001")]
    assert row.status is Status.SUCCEEDED and row.data == b'{"i":1}'
    assert store.results[("p", "t001")] == b"ok"
    assert store.digests[("p", "t001")] == new(1).data_sha256
    assert store.writes == {"t001": 1}
    assert store.offsets[KEY] == {0: 8}


async def test_a_task_held_past_the_delay_is_pinned_then_updated_at_its_end() -> None:
    store, clock = Counting(), Clock()
    g = await delayed(store, clock)
    await g.admit(AdmitBatch(new=(new(1), new(2)), offsets={0: 2}))
    (grant,) = take(g, 1)
    clock.now += DELAY_S / 2
    await g.flush()
    assert store.rows == {} and not store.offsets.get(KEY)  # younger than the delay
    clock.now += DELAY_S
    await g.flush()
    assert store.status("t001") is Status.LEASED  # pinned as it is
    assert store.status("t002") is Status.QUEUED
    assert store.offsets[KEY] == {0: 2}
    await succeed(g, [grant])
    assert store.status("t001") is Status.SUCCEEDED
    assert store.writes == {"t001": 2, "t002": 1}


async def test_the_offsets_wait_for_every_task_of_earlier_batches() -> None:
    store, clock = Counting(), Clock()
    g = await delayed(store, clock)
    await g.admit(AdmitBatch(new=(new(1),), offsets={0: 1}))
    await g.admit(AdmitBatch(new=(new(2),), offsets={0: 2, 1: 5}))
    first, second = take(g, 2)
    await succeed(g, [second])
    assert store.rows[("p", "t002")].status is Status.SUCCEEDED
    assert not store.offsets.get(KEY)  # t001 of the first batch has no row yet
    await succeed(g, [first])
    assert store.offsets[KEY] == {0: 2, 1: 5}
    assert not g.book.holding


async def test_a_replay_after_a_crash_runs_held_tasks_again_and_skips_ended_ones() -> None:
    store, clock = Counting(), Clock()
    old = await delayed(store, clock)
    batch = AdmitBatch(new=(new(1), new(2)), offsets={0: 2})
    await old.admit(batch)
    done, running = take(old, 2)
    await succeed(old, [done])
    assert not store.offsets.get(KEY)  # t002 is held: a new owner starts from the beginning
    # old's replica dies; a new owner replays the partition from the stored offsets
    fresh = await delayed(store, clock)
    result = await fresh.admit(batch)
    assert (result.admitted, result.duplicates) == (1, 1)  # t001 has its row: not again
    (again,) = take(fresh)
    assert again.task.id == "t002" and again.token != running.token
    old.report([Report(token=running.token, outcome=Outcome.SUCCEEDED)])
    with pytest.raises(StaleEpoch):  # the old owner's late report writes nothing
        await old.flush()
    await succeed(fresh, [again])
    assert store.rows[("p", "t002")].status is Status.SUCCEEDED
    assert store.offsets[KEY] == {0: 2}


async def test_a_resubmit_of_a_held_task_is_a_duplicate_or_a_conflict() -> None:
    store, clock = Counting(), Clock()
    g = await delayed(store, clock)
    await g.admit(AdmitBatch(new=(new(1),), offsets={0: 1}))
    same = await g.admit(AdmitBatch(new=(new(1),), offsets={0: 2}))
    other = dataclasses.replace(new(1), data=b"{}", data_sha256=b"x" * 32)
    differs = await g.admit(AdmitBatch(new=(other,), offsets={0: 3}))
    assert (same.admitted, same.duplicates) == (0, 1)
    assert (differs.admitted, differs.conflicts) == (0, 1)
    (grant,) = take(g)
    await succeed(g, [grant])
    assert store.rows[("p", "t001")].data == b'{"i":1}'  # the first submit stands
    assert store.offsets[KEY] == {0: 3}


async def test_tasks_beyond_the_window_and_timers_are_written_at_admission() -> None:
    store, clock = Counting(), Clock()
    g = await delayed(store, clock, window_tasks=10)
    tasks = (*(new(i) for i in range(15)), new(99, due_in_s=60))
    result = await g.admit(AdmitBatch(new=tasks, offsets={0: 16}))
    assert result.admitted == 16
    written = {tid for _, tid in store.rows}
    assert written == {f"t{i:03d}" for i in range(10, 15)} | {"t099"}
    assert store.rows[("p", "t099")].status is Status.SCHEDULED
    assert g.book.ready_count == 10 and g.book.stats()["queued"] == 15
    assert not store.offsets.get(KEY)  # ten tasks held in memory still


async def test_a_grain_going_away_writes_every_held_task_and_the_offsets() -> None:
    store, clock = Counting(), Clock()
    g = await delayed(store, clock)
    await g.admit(AdmitBatch(new=(new(1), new(2)), offsets={0: 2}))
    take(g, 1)
    await g.deactivate()
    assert store.rows[("p", "t001")].status is Status.LEASED
    assert store.rows[("p", "t002")].status is Status.QUEUED
    assert store.offsets[KEY] == {0: 2}


async def test_a_failed_flush_keeps_the_held_tasks_and_their_offsets_back() -> None:
    store, clock = Counting(), Clock()
    g = await delayed(store, clock)
    await g.admit(AdmitBatch(new=(new(1),), offsets={0: 1}))
    (grant,) = take(g)
    _, durable = g.report([Report(token=grant.token, outcome=Outcome.SUCCEEDED)])
    store.down = True
    with pytest.raises(StoreUnavailable):
        await g.flush()
    assert isinstance(durable.exception(), StoreUnavailable)
    store.down = False
    await g.flush()
    assert store.rows[("p", "t001")].status is Status.SUCCEEDED
    assert store.offsets[KEY] == {0: 1}


async def test_a_held_task_that_fails_is_written_as_its_retry_or_its_cancel() -> None:
    store, clock = Counting(), Clock()
    g = await delayed(store, clock, max_attempts=3)
    await g.admit(AdmitBatch(new=(new(1), new(2)), offsets={0: 2}))
    (grant,) = take(g, 1)
    _, durable = g.report([Report(token=grant.token, outcome=Outcome.FAILED, error="boom")])
    await g.admit(AdmitBatch(cancels=("t002",), offsets={0: 3}))
    await g.flush()
    await durable
    retry = store.rows[("p", "t001")]
    assert (retry.status, retry.attempt, retry.error) == (Status.SCHEDULED, 2, "boom")
    assert any(tid == "t001" for _, tid in store.timers["p"])
    assert store.rows[("p", "t002")].status is Status.CANCELLED
    assert store.offsets[KEY] == {0: 3}


async def test_without_a_delay_tasks_are_written_at_admission_as_before() -> None:
    store, clock = Counting(), Clock()
    g = core(store, clock)
    await g.activate()
    await g.admit(AdmitBatch(new=(new(1),), offsets={0: 1}))
    assert store.rows[("p", "t001")].status is Status.QUEUED
    assert store.offsets[KEY] == {0: 1}
    await succeed(g, take(g))
    assert store.writes == {"t001": 2}  # the insert; the lease and the end in one flush


async def test_a_shared_topic_batch_is_told_when_its_held_tasks_are_written() -> None:
    """On the shared topic the shard's forwarder stores the offsets: the grain stores
    none and calls the batch's ``on_written`` once every task it held is written."""
    store, clock = Counting(), Clock()
    g = await delayed(store, clock)
    told: list[str] = []
    first = AdmitBatch(new=(new(1),), on_written=lambda: told.append("first"))
    second = AdmitBatch(new=(new(2),), on_written=lambda: told.append("second"))
    assert (await g.admit(first)).held and (await g.admit(second)).held
    one, two = take(g, 2)
    await succeed(g, [two])
    assert told == []  # the first batch's task has no row yet
    await succeed(g, [one])
    assert told == ["first", "second"]
    assert not store.offsets.get(KEY)


async def test_a_resubmit_of_a_held_task_is_caught_when_the_window_is_full_too() -> None:
    """With the window full the resubmit would be written at admission, as a backlog
    task is: it must still meet the held first submit, not make a second task."""
    store, clock = Counting(), Clock()
    g = await delayed(store, clock, window_tasks=10)
    await g.admit(AdmitBatch(new=tuple(new(i) for i in range(10)), offsets={0: 10}))
    again = await g.admit(AdmitBatch(new=(new(3), new(50)), offsets={0: 12}))
    assert (again.admitted, again.duplicates) == (1, 1)  # t050 beyond the window, written
    assert {tid for _, tid in store.rows} == {"t050"}
    assert g.book.stats()["queued"] == 11


async def test_a_shared_topic_batch_of_timers_alone_is_told_at_the_next_flush() -> None:
    """A batch whose tasks were all written at admission (timers) holds nothing, but its
    forwarder waits behind any held batch before it: the next flush tells it, with
    nothing to write, and the grain can then rest."""
    store, clock = Counting(), Clock()
    g = await delayed(store, clock)
    told: list[str] = []
    later = AdmitBatch(new=(new(1, due_in_s=3600),), on_written=lambda: told.append("later"))
    assert (await g.admit(later)).held
    assert store.writes == {"t001": 1} and told == []
    assert g.wants_flush() and not g.book.tickless
    await g.flush()
    assert told == ["later"]
    assert store.writes == {"t001": 1}
    assert not g.book.holding and g.book.tickless


async def test_a_stored_task_that_ends_within_the_delay_is_updated_once() -> None:
    """A task written at admission (here: past a full window, then paged in) is not
    written again at its grant: its lease and its end go out together, in the flush
    that acknowledges the report."""
    store, clock = Counting(), Clock()
    g = await delayed(store, clock, window_tasks=10)
    await g.admit(AdmitBatch(new=tuple(new(i) for i in range(11)), offsets={0: 11}))
    assert store.writes == {"t010": 1}
    await succeed(g, take(g, 10))
    await g.tick()  # pages t010 in
    (grant,) = take(g, 1)
    assert grant.task.id == "t010"
    clock.now += DELAY_S / 2
    await g.flush()
    assert store.status("t010") is Status.QUEUED  # its lease is not written yet
    await succeed(g, [grant])
    assert store.writes["t010"] == 2 and store.status("t010") is Status.SUCCEEDED


async def test_a_lease_older_than_the_delay_is_written_and_the_end_again() -> None:
    store, clock = Counting(), Clock()
    g = await delayed(store, clock)
    await g.admit(AdmitBatch(new=(new(1, due_in_s=0),)))  # no offsets: written at admission
    assert store.writes == {"t001": 1}
    (grant,) = take(g, 1)
    await g.flush()
    assert store.status("t001") is Status.QUEUED and g.book.unwritten_leases
    assert not g.wants_flush()  # the lease alone, younger than the delay
    clock.now += DELAY_S
    assert g.wants_flush()
    await g.flush()
    assert store.status("t001") is Status.LEASED and not g.book.unwritten_leases
    await succeed(g, [grant])
    assert store.writes["t001"] == 3 and store.status("t001") is Status.SUCCEEDED


async def test_a_young_lease_alone_wants_no_flush_but_keeps_its_grain_awake() -> None:
    """A lease younger than the delay is no reason for a flush each tick; but its grain is
    neither tickless nor quiescent, so it keeps its fast pace (and flushes) until the
    lease is old enough to be written, and it cannot rest before."""
    store, clock = Counting(), Clock()
    g = await delayed(store, clock)
    await g.admit(AdmitBatch(new=(new(1, due_in_s=0),)))  # no offsets: written at admission
    take(g, 1)
    await g.flush()
    assert not g.wants_flush() and g.wants_flush(everything=True)
    assert not g.tickless and not g.quiescent
    clock.now += DELAY_S / 2
    assert not g.wants_flush()
    clock.now += DELAY_S / 2
    assert g.wants_flush()
    await g.flush()
    assert store.status("t001") is Status.LEASED and not g.wants_flush()

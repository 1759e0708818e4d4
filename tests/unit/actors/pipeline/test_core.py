"""PipelineCore over the in-memory store: long polls, durable reports, fencing, takeover."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
from typing import Any

import pytest

from actors.pipeline.admitting import ADMIT_CHUNK
from actors.pipeline.core import GrainClock, PipelineCore
from actors.pipeline.memory import InMemoryTaskStore
from actors.pipeline.model import (
    AdmitBatch,
    GrainKey,
    Grant,
    NewTask,
    Outcome,
    PipelineConfig,
    Report,
    ReportAck,
    Status,
)
from actors.pipeline.ports import Admission, StaleEpoch, StoreUnavailable

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
KEY = GrainKey(pipeline_id="p")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def grain_clock(self) -> GrainClock:
        return GrainClock(
            monotonic=lambda: self.now, wall=lambda: T0 + dt.timedelta(seconds=self.now)
        )


def new(i: int, *, due_in_s: float = 0) -> NewTask:
    data = f'{{"i":{i}}}'.encode()
    return NewTask(
        id=f"t{i:03d}",
        data=data,
        data_sha256=hashlib.sha256(data).digest(),
        due_at=T0 + dt.timedelta(seconds=due_in_s),
        created_at=T0,
    )


def core(store: InMemoryTaskStore, clock: Clock, owner: str = "a", **cfg: float) -> PipelineCore:
    config = PipelineConfig(pipeline_id="p", **cfg)  # type: ignore[arg-type]
    return PipelineCore(config=config, key=KEY, owner=owner, store=store, clock=clock.grain_clock())


async def test_a_waiting_poll_is_served_when_tasks_are_admitted() -> None:
    store, clock = InMemoryTaskStore(), Clock()
    g = core(store, clock)
    await g.activate()
    waiting = g.poll(worker="w", max_tasks=5, max_bytes=1 << 20)
    assert not waiting.done()
    result = await g.admit(AdmitBatch(new=(new(1), new(2)), offsets={0: 2}))
    assert result.admitted == 2
    grants = await asyncio.wait_for(waiting, 1)
    assert [gr.task.id for gr in grants] == ["t001", "t002"]
    assert store.offsets[KEY] == {0: 2}


async def test_withdrawn_poll_gets_nothing_and_keeps_tasks_for_others() -> None:
    store, clock = InMemoryTaskStore(), Clock()
    g = core(store, clock)
    await g.activate()
    waiting = g.poll(worker="w", max_tasks=5, max_bytes=1 << 20)
    g.withdraw(waiting)
    assert waiting.result() == []
    await g.admit(AdmitBatch(new=(new(1),)))
    assert g.book.ready_count == 1


async def test_report_is_acknowledged_only_after_the_flush() -> None:
    store, clock = InMemoryTaskStore(), Clock()
    g = core(store, clock)
    await g.activate()
    await g.admit(AdmitBatch(new=(new(1),)))
    (grant,) = g.poll(worker="w", max_tasks=1, max_bytes=1 << 20).result()
    acks, durable = g.report([Report(token=grant.token, outcome=Outcome.SUCCEEDED, result=b"done")])
    assert acks == [ReportAck.ACCEPTED] and not durable.done()
    assert store.results == {}
    await g.flush()
    assert durable.done() and durable.exception() is None
    assert store.results[("p", "t001")] == b"done"
    assert store.rows[("p", "t001")].status is Status.SUCCEEDED


async def test_a_failed_flush_fails_the_report_and_keeps_the_change() -> None:
    store, clock = InMemoryTaskStore(), Clock()
    g = core(store, clock)
    await g.activate()
    await g.admit(AdmitBatch(new=(new(1),)))
    (grant,) = g.poll(worker="w", max_tasks=1, max_bytes=1 << 20).result()
    _, durable = g.report([Report(token=grant.token, outcome=Outcome.SUCCEEDED)])
    store.down = True
    with pytest.raises(StoreUnavailable):
        await g.flush()
    assert isinstance(durable.exception(), StoreUnavailable)
    store.down = False
    # the worker retries the same report: the grant is finished, its change still pending
    acks, again = g.report([Report(token=grant.token, outcome=Outcome.SUCCEEDED)])
    assert acks == [ReportAck.DUPLICATE]
    await g.flush()
    assert again.exception() is None
    assert store.rows[("p", "t001")].status is Status.SUCCEEDED


async def test_a_paused_ex_owner_writes_nothing_after_the_takeover() -> None:
    store, clock = InMemoryTaskStore(), Clock()
    old = core(store, clock, owner="a")
    await old.activate()
    await old.admit(AdmitBatch(new=(new(1), new(2))))
    first, _second = old.poll(worker="w", max_tasks=2, max_bytes=1 << 20).result()
    await old.flush()  # leases are now in the store
    new_owner = core(store, clock, owner="b")
    await new_owner.activate()
    assert new_owner.epoch == old.epoch + 1 and new_owner.book.leased_count == 2
    _, stale = old.report([Report(token=first.token, outcome=Outcome.FAILED, error="late")])
    with pytest.raises(StaleEpoch):
        await old.flush()
    assert isinstance(stale.exception(), StaleEpoch)
    assert old.fenced
    assert store.rows[("p", "t001")].status == Status.LEASED  # untouched
    # the worker still running the task reports to the new owner with its old token
    acks, durable = new_owner.report([Report(token=first.token, outcome=Outcome.SUCCEEDED)])
    await new_owner.flush()
    assert acks == [ReportAck.ACCEPTED] and durable.exception() is None
    assert store.rows[("p", "t001")].status.value == "succeeded"


async def test_tick_expires_leases_and_serves_the_requeued_task() -> None:
    store, clock = InMemoryTaskStore(), Clock()
    g = core(store, clock, lease_timeout_s=10)
    await g.activate()
    await g.admit(AdmitBatch(new=(new(1),)))
    (lost,) = g.poll(worker="w1", max_tasks=1, max_bytes=1 << 20).result()
    waiting = g.poll(worker="w2", max_tasks=1, max_bytes=1 << 20)
    clock.now = 11
    await g.tick()  # expired: the next attempt waits out the backoff (about 1 s)
    assert not waiting.done() and g.book.stats()["scheduled"] == 1
    assert store.rows[("p", "t001")].status is Status.QUEUED  # neither lease nor retry flushed
    clock.now = 12.5
    await g.tick()  # fires the retry from memory: nothing is read or written
    (again,) = waiting.result()
    assert again.task.id == lost.task.id and again.token.attempt == 2
    assert store.rows[("p", "t001")].status is Status.QUEUED
    await g.flush()  # the second lease is the row's next state: no timer row was ever needed
    row = store.rows[("p", "t001")]
    assert (row.status, row.attempt) == (Status.LEASED, 2)
    assert not store.timers.get("p")


async def test_backlog_beyond_the_window_is_paged_in_from_the_store() -> None:
    store, clock = InMemoryTaskStore(), Clock()
    g = core(store, clock, window_tasks=4)
    await g.activate()
    await g.admit(AdmitBatch(new=tuple(new(i) for i in range(10))))
    assert g.book.ready_count == 4
    seen: list[str] = []
    while len(seen) < 10:
        grants = g.poll(worker="w", max_tasks=3, max_bytes=1 << 20).result()
        assert grants, f"ran dry after {seen}"
        seen += [gr.task.id for gr in grants]
        await g.flush()
        await g.tick()
    assert sorted(seen) == [f"t{i:03d}" for i in range(10)]


async def test_cancel_and_requeue_through_admission() -> None:
    store, clock = InMemoryTaskStore(), Clock()
    g = core(store, clock, window_tasks=1)
    await g.activate()
    await g.admit(AdmitBatch(new=(new(1), new(2))))
    result = await g.admit(AdmitBatch(cancels=("t001", "t002")))
    assert result.cancelled == 2  # one from the window, one from the store
    assert g.book.stats()["cancelled"] == 2 and g.book.stats()["queued"] == 0
    store.rows[("p", "t002")].status = Status.DEAD
    g.book.load_counts({Status.DEAD: 1})
    result = await g.admit(AdmitBatch(requeues=("t002",)))
    assert result.requeued == 1 and g.book.stats()["queued"] == 1


async def test_counters_reach_the_store_even_when_only_admission_changed_them() -> None:
    store, clock = InMemoryTaskStore(), Clock()
    g = core(store, clock)
    await g.activate()
    await g.admit(AdmitBatch(new=(new(1), new(2))))
    assert g.wants_flush()
    await g.flush()
    assert store.stats["p"]["backlog"] == 2
    assert not g.wants_flush()  # nothing changed since


# -- timers: tasks that are not due yet ---------------------------------------------------


async def test_a_delayed_task_waits_then_serves_a_waiting_poll_when_due() -> None:
    store, clock = InMemoryTaskStore(), Clock()
    g = core(store, clock)
    await g.activate()
    waiting = g.poll(worker="w", max_tasks=5, max_bytes=1 << 20)
    await g.admit(AdmitBatch(new=(new(1, due_in_s=10),)))
    assert g.next_timer_in() == 10
    clock.now = 9.9
    await g.tick()
    assert not waiting.done() and g.book.stats()["scheduled"] == 1
    clock.now = 10.0
    assert g.next_timer_in() == 0
    await g.tick()
    grants = await asyncio.wait_for(waiting, 1)
    assert [gr.task.id for gr in grants] == ["t001"]
    # Fired in memory: the row and its timer row stay until the lease is flushed...
    assert store.rows[("p", "t001")].status is Status.SCHEDULED
    assert store.timers["p"] == {(grants[0].task.due_at, "t001")}
    await g.flush()
    # ... and that flush writes the lease and ends the timer row together.
    flushed = store.rows[("p", "t001")]
    assert flushed.status is Status.LEASED
    assert store.timers["p"] == set()
    await g.flush()  # a later flush of the same task does not end the timer again
    assert g.book.dirty is False


async def test_a_timer_fired_in_memory_fires_again_after_a_crash_before_its_flush() -> None:
    store, clock = InMemoryTaskStore(), Clock()
    g = core(store, clock)
    await g.activate()
    await g.admit(AdmitBatch(new=(new(1, due_in_s=10), new(2, due_in_s=20))))
    clock.now = 10.0
    await g.tick()
    (first,) = g.poll(worker="w", max_tasks=5, max_bytes=1 << 20).result()
    assert first.task.id == "t001"  # leased, never flushed: the grain dies here
    successor = core(store, clock)
    await successor.activate()  # reads the timer rows back: t001's is still there
    (again,) = successor.poll(worker="w2", max_tasks=5, max_bytes=1 << 20).result()
    assert again.task.id == "t001" and again.token.epoch > first.token.epoch
    assert successor.book.stats()["scheduled"] == 1  # t002 waits for its time
    await successor.flush()
    assert store.timers["p"] == {(again.task.due_at + dt.timedelta(seconds=10), "t002")}


async def test_a_stale_timer_row_read_at_fire_time_is_ended() -> None:
    store, clock = InMemoryTaskStore(), Clock()
    g = core(store, clock)
    await g.activate()
    await g.admit(AdmitBatch(new=(new(1, due_in_s=10),)))
    stale = (store.rows[("p", "t001")].due_at, "t001")
    store.rows[("p", "t001")].status = Status.SUCCEEDED  # ended by an earlier owner
    assert await store.fire_timers(grain=g.key, epoch=g.epoch, timers=[stale], now=T0) == []
    assert store.timers["p"] == set()


async def test_cancel_reaches_a_timer_in_memory_and_one_only_in_the_store() -> None:
    store, clock = InMemoryTaskStore(), Clock()
    g = core(store, clock, timer_heap=2)
    await g.activate()
    await g.admit(AdmitBatch(new=tuple(new(i, due_in_s=i) for i in range(1, 5))))
    assert len(g.book.timers) == 2 and "t004" not in g.book.timers  # t003, t004: store only
    result = await g.admit(AdmitBatch(cancels=("t001", "t004")))
    assert result.cancelled == 2
    assert g.book.stats()["scheduled"] == 2 and g.book.stats()["cancelled"] == 2
    clock.now = 10
    await g.tick()  # refills from the store and fires what is due: t002, t003
    await g.tick()
    assert sorted(t for t in g.book._ready) == ["t002", "t003"]
    assert {tid: t.status for (_, tid), t in store.rows.items()} == {
        "t001": Status.CANCELLED,
        "t002": Status.SCHEDULED,  # fired in memory: rows change with their leases' flush
        "t003": Status.SCHEDULED,
        "t004": Status.CANCELLED,
    }


async def test_a_new_incarnation_fires_the_timers_of_the_old_one() -> None:
    store, clock = InMemoryTaskStore(), Clock()
    first = core(store, clock)
    await first.activate()
    await first.admit(AdmitBatch(new=(new(1, due_in_s=5), new(2, due_in_s=50))))
    second = core(store, clock, owner="b")
    await second.activate()
    assert len(second.book.timers) == 2 and second.book.stats()["scheduled"] == 2
    clock.now = 5
    await second.tick()
    assert list(second.book._ready) == ["t001"]
    with pytest.raises(StaleEpoch):
        clock.now = 60
        await first.tick()  # fenced: the old owner fires nothing
    assert store.rows[("p", "t002")].status is Status.SCHEDULED


async def test_a_failed_fire_keeps_the_timer_for_the_next_tick() -> None:
    store, clock = InMemoryTaskStore(), Clock()
    g = core(store, clock)
    await g.activate()
    await g.admit(AdmitBatch(new=(new(1, due_in_s=1),)))
    clock.now = 2
    store.down = True
    with pytest.raises(StoreUnavailable):
        await g.tick()
    assert "t001" in g.book.timers
    store.down = False
    await g.tick()
    assert list(g.book._ready) == ["t001"]


async def test_a_failed_report_is_acknowledged_once_its_retry_is_durable() -> None:
    store, clock = InMemoryTaskStore(), Clock()
    g = core(store, clock)
    await g.activate()
    await g.admit(AdmitBatch(new=(new(1),)))
    (grant,) = g.poll(worker="w1", max_tasks=1, max_bytes=1 << 20).result()
    acks, durable = g.report([Report(token=grant.token, outcome=Outcome.FAILED, error="x")])
    assert acks == [ReportAck.ACCEPTED] and not durable.done()
    await g.flush()
    assert durable.done()
    row = store.rows[("p", "t001")]
    assert (row.status, row.attempt, row.error) == (Status.SCHEDULED, 2, "x")
    assert store.timers["p"] == {(row.due_at, "t001")}
    assert T0 + dt.timedelta(seconds=0.9) <= row.due_at <= T0 + dt.timedelta(seconds=1.1)


async def test_the_snapshot_counts_timers_due_within_the_lead_time() -> None:
    store, clock = InMemoryTaskStore(), Clock()
    g = core(store, clock, lead_s=60)
    await g.activate()
    await g.admit(AdmitBatch(new=(new(1, due_in_s=30), new(2, due_in_s=90), new(3))))
    snap = g.snapshot()
    assert (snap.backlog, snap.due_soon) == (1, 1)  # t003 now, t001 within the minute
    clock.now = 31
    await g.tick()
    assert g.snapshot().due_soon == 1  # t001 is queued now; t002 is within the minute
    no_lead = core(InMemoryTaskStore(), Clock())
    await no_lead.activate()
    await no_lead.admit(AdmitBatch(new=(new(1, due_in_s=30),)))
    assert no_lead.snapshot().due_soon == 0


async def test_a_large_admission_with_timers_waiting_fires_due_ones_between_its_parts() -> None:
    calls: list[tuple[int, bool]] = []
    waiting: asyncio.Future[list[Grant]] = asyncio.get_running_loop().create_future()

    class Spy(InMemoryTaskStore):
        async def admit(self, **kw: Any) -> Admission:
            calls.append((len(kw["tasks"]), waiting.done()))
            return await super().admit(**kw)

    store, clock = Spy(), Clock()
    g = core(store, clock)
    await g.activate()
    await g.admit(AdmitBatch(new=(new(1, due_in_s=5),)))
    waiting = g.poll(worker="w", max_tasks=5, max_bytes=1 << 20)
    clock.now = 5.0  # t001 is due as a backlog of 2,500 later tasks arrives
    later = tuple(new(i, due_in_s=60) for i in range(2, 2502))
    calls.clear()
    result = await g.admit(AdmitBatch(new=later, offsets={0: 2501}))
    assert result.admitted == 2500
    # three transactions, and the due task was handed out before the first
    assert calls == [(ADMIT_CHUNK, True), (ADMIT_CHUNK, True), (500, True)]
    assert [grant.task.id for grant in waiting.result()] == ["t001"]
    assert (await store.load(grain=g.key)).offsets == {0: 2501}


async def test_without_timers_an_admission_is_one_transaction() -> None:
    calls: list[int] = []

    class Spy(InMemoryTaskStore):
        async def admit(self, **kw: Any) -> Admission:
            calls.append(len(kw["tasks"]))
            return await super().admit(**kw)

    store, clock = Spy(), Clock()
    g = core(store, clock)
    await g.activate()
    await g.admit(AdmitBatch(new=tuple(new(i) for i in range(2500))))
    assert calls == [2500]

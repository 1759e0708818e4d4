"""What makes a grain tickless (nothing for a tick or a flush to do until a message) and
quiescent (tickless, with no task to hand out either: it may deactivate)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib

from actors.pipeline.book import TaskBook
from actors.pipeline.core import GrainClock, PipelineCore
from actors.pipeline.memory import InMemoryTaskStore
from actors.pipeline.model import (
    AdmitBatch,
    GrainKey,
    NewTask,
    Outcome,
    PipelineConfig,
    Report,
    Status,
    Task,
)
from actors.pipeline.recurrence import Every
from actors.pipeline.schedules import ScheduleSpec

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
    data = b"{}"
    return NewTask(
        id=f"t{i}",
        data=data,
        data_sha256=hashlib.sha256(data).digest(),
        due_at=T0 + dt.timedelta(seconds=due_in_s),
        created_at=T0,
    )


def task(i: int, *, due: dt.datetime = T0) -> Task:
    status = Status.SCHEDULED if due > T0 else Status.QUEUED
    return Task(id=f"t{i}", attempt=1, status=status, data=b"{}", due_at=due, created_at=T0)


def loaded_book(**config: int) -> TaskBook:
    """A book whose grain has read the store: no timers there (the horizon is open)."""
    book = TaskBook(config=PipelineConfig(pipeline_id="p", **config), epoch=1)  # type: ignore[arg-type]
    book.timers.refill([], limit=10)
    return book


async def active_core(store: InMemoryTaskStore, clock: Clock, lead_s: float = 0) -> PipelineCore:
    core = PipelineCore(
        config=PipelineConfig(pipeline_id="p", lead_s=lead_s),
        key=KEY,
        owner="a",
        store=store,
        clock=clock.grain_clock(),
    )
    await core.activate()
    return core


def test_a_book_is_not_quiescent_before_it_knows_the_store_holds_no_timers() -> None:
    book = TaskBook(config=PipelineConfig(pipeline_id="p"), epoch=1)
    assert not book.quiescent  # the refill has not run: the store may hold any
    book.timers.refill([], limit=10)
    assert book.quiescent


def test_a_book_with_stored_timers_left_to_read_is_not_quiescent() -> None:
    book = TaskBook(config=PipelineConfig(pipeline_id="p"), epoch=1)
    book.timers.refill([(T0, "t1"), (T0, "t2")], limit=2)  # a full page: maybe more
    for key, _ in book.timers.pop_due(wall=T0, limit=2):
        assert key[1] in ("t1", "t2")
    assert len(book.timers) == 0 and not book.quiescent


def test_a_ready_task_a_lease_and_an_unflushed_report_each_keep_a_book_busy() -> None:
    book = loaded_book()
    book.admit([task(1)])
    assert not book.quiescent  # ready: to hand out, and to sweep for its deadline
    (grant,) = book.lease(worker="w", max_tasks=1, max_bytes=1 << 20, now=0, wall=T0)
    book.take_flush()
    assert not book.quiescent  # leased: to expire
    book.report(Report(token=grant.token, outcome=Outcome.SUCCEEDED), wall=T0)
    assert not book.quiescent  # its change waits for a flush
    book.take_flush()
    assert book.quiescent


def test_a_stored_backlog_keeps_a_book_busy_until_a_page_finds_it_gone() -> None:
    book = loaded_book()
    book.load_counts({Status.QUEUED: 3})
    assert not book.quiescent and book.wants_page()
    book.page_in([], exhausted=True)
    assert book.quiescent


def test_a_book_holding_only_timers_is_quiescent_until_it_wants_a_refill() -> None:
    """Firing needs no tick (the actor arms a timer at the due time): a book holding
    timers may rest, with a wake-up; one whose heap ran low while the store holds more
    has a refill to do."""
    book = loaded_book()
    book.admit([task(1, due=T0 + dt.timedelta(hours=1))])
    book.take_flush()
    assert book.quiescent and book.timers.next_due() == T0 + dt.timedelta(hours=1)
    book.timers.horizon = (T0 + dt.timedelta(hours=2), "")  # the store holds later ones
    assert book.timers.wants_refill() and not book.quiescent


async def test_a_fresh_grain_is_quiescent_once_its_counters_are_written() -> None:
    store, clock = InMemoryTaskStore(), Clock()
    core = await active_core(store, clock)
    assert not core.quiescent
    await core.flush()
    assert core.quiescent and store.stats["p"] == core.book.stats()


async def test_a_waiting_poll_leaves_a_grain_quiescent() -> None:
    store, clock = InMemoryTaskStore(), Clock()
    core = await active_core(store, clock)
    await core.flush()
    waiting = core.poll(worker="w", max_tasks=1, max_bytes=1 << 20)
    assert core.quiescent and not waiting.done()
    await core.admit(AdmitBatch(new=(new(1),)))
    assert [grant.task.id for grant in waiting.result()] == ["t1"]
    assert not core.quiescent


async def test_a_report_waiting_for_its_flush_keeps_a_grain_busy() -> None:
    store, clock = InMemoryTaskStore(), Clock()
    core = await active_core(store, clock)
    await core.admit(AdmitBatch(new=(new(1),)))
    (grant,) = core.poll(worker="w", max_tasks=1, max_bytes=1 << 20).result()
    _, durable = core.report([Report(token=grant.token, outcome=Outcome.SUCCEEDED)])
    assert not core.quiescent and not durable.done()
    await core.flush()
    assert durable.done() and core.quiescent


async def test_a_cancel_in_the_store_keeps_a_grain_busy_until_its_counters_are_written() -> None:
    store, clock = InMemoryTaskStore(), Clock()
    core = await active_core(store, clock)
    await core.admit(AdmitBatch(new=(new(1, due_in_s=3600),)))
    await core.flush()
    await core.admit(AdmitBatch(cancels=("t1",)))  # a timer: the store cancels its row
    assert store.rows[("p", "t1")].status is Status.CANCELLED
    assert core.book.quiescent and not core.quiescent  # the counters are not written yet
    await core.flush()
    assert core.quiescent


async def test_a_grain_holding_a_schedule_is_quiescent_and_wakes_before_it_fires() -> None:
    store, clock = InMemoryTaskStore(), Clock()
    store.schedules["p"] = {
        "s": ScheduleSpec(
            id="s", name="hourly", version=1, rule=Every(every_s=3600, anchor=T0), data=b"{}"
        )
    }
    core = await active_core(store, clock, lead_s=60)
    await core.flush()
    fires_at = core.schedules.book.next_due()
    assert fires_at is not None and core.quiescent
    assert core.wake_at() == fires_at - dt.timedelta(seconds=60)  # its workers in time


async def test_a_grain_with_timers_wakes_at_the_soonest() -> None:
    store, clock = InMemoryTaskStore(), Clock()
    core = await active_core(store, clock)
    await core.flush()
    assert core.wake_at() is None  # only a message can give it work
    await core.admit(AdmitBatch(new=(new(1, due_in_s=7200), new(2, due_in_s=5400))))
    await core.flush()
    assert core.quiescent
    assert core.wake_at() == T0 + dt.timedelta(seconds=5400)


def test_ready_tasks_waiting_for_a_worker_need_no_tick_unless_one_has_a_deadline() -> None:
    book = loaded_book()
    book.admit([task(1)])
    book.take_flush()
    # A backlog and no worker yet: nothing for a tick to do until a poll comes.
    assert book.tickless and not book.quiescent
    deadline = dataclasses.replace(task(2), expires_at=T0 + dt.timedelta(minutes=5))
    book.admit([deadline])
    book.take_flush()
    assert not book.tickless  # its deadline is swept by a tick
    (grant,) = book.lease(worker="w", max_tasks=1, max_bytes=1 << 20, now=0, wall=T0)
    assert grant.token.task_id == "t1"
    book.take_flush()
    assert not book.tickless  # and a lease expires


def test_the_deadline_sweep_counts_ready_tasks_with_a_deadline_as_they_come_and_go() -> None:
    book = loaded_book()
    soon = T0 + dt.timedelta(minutes=5)
    book.admit([dataclasses.replace(task(i), expires_at=soon) for i in (1, 2)] + [task(3)])
    book.take_flush()
    assert not book.tickless
    (grant,) = book.lease(worker="w", max_tasks=1, max_bytes=1 << 20, now=0, wall=T0)
    assert grant.token.task_id == "t1" and book.end_overdue(wall=T0) == 0
    assert book.end_overdue(wall=soon + dt.timedelta(seconds=1)) == 1  # t2 ends expired
    assert book.ready_count == 1 and book.end_overdue(wall=soon + dt.timedelta(days=1)) == 0
    book.report(Report(token=grant.token, outcome=Outcome.SUCCEEDED), wall=T0)
    book.take_flush()
    assert book.tickless  # t3 waits for a worker, with no deadline to sweep


def test_a_window_below_half_with_more_in_the_store_needs_a_tick_to_page_in() -> None:
    book = loaded_book(window_tasks=4)
    book.load_counts({Status.QUEUED: 10})
    assert not book.tickless and book.wants_page()
    book.page_in([task(i) for i in range(4)], exhausted=False)
    assert book.tickless and not book.quiescent  # a full window: a poll comes first

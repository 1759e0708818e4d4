"""A grain fires its schedules over the in-memory store: runs, takeover, fencing, changes."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from actors.pipeline.core import GrainClock, PipelineCore
from actors.pipeline.memory import InMemoryTaskStore
from actors.pipeline.model import AdmitBatch, GrainKey, Outcome, PipelineConfig, Report, Status
from actors.pipeline.ports import StaleEpoch
from actors.pipeline.recurrence import Every
from actors.pipeline.schedules import Overlap, ScheduleSpec, run_id

T0 = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)
KEY = GrainKey(pipeline_id="p")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def grain_clock(self) -> GrainClock:
        return GrainClock(
            monotonic=lambda: self.now, wall=lambda: T0 + dt.timedelta(seconds=self.now)
        )


def spec(**overrides: object) -> ScheduleSpec:
    values: dict[str, object] = {
        "id": "sch-1",
        "name": "every-10s",
        "version": 1,
        "rule": Every(every_s=10, anchor=T0),
        "data": b'{"x":1}',
    }
    values.update(overrides)
    return ScheduleSpec(**values)  # type: ignore[arg-type]


def grain(store: InMemoryTaskStore, clock: Clock, owner: str = "a") -> PipelineCore:
    return PipelineCore(
        config=PipelineConfig(pipeline_id="p"),
        key=KEY,
        owner=owner,
        store=store,
        clock=clock.grain_clock(),
    )


def runs(store: InMemoryTaskStore) -> list[str]:
    return sorted(t.id for t in store.rows.values() if t.schedule_id == "sch-1")


async def test_a_schedule_fires_one_task_per_fire_time_with_its_nominal_time() -> None:
    store, clock = InMemoryTaskStore(), Clock()
    store.schedules["p"] = {"sch-1": spec()}
    g = grain(store, clock)
    await g.activate()
    assert runs(store) == []
    assert g.next_timer_in() == 10
    for second in (10.2, 10.4, 20.1):
        clock.now = second
        await g.tick()
    assert runs(store) == [run_id("sch-1", T0 + dt.timedelta(seconds=s)) for s in (10, 20)]
    task = store.rows[("p", run_id("sch-1", T0 + dt.timedelta(seconds=10)))]
    assert task.fire_at == T0 + dt.timedelta(seconds=10)
    assert task.data == b'{"x":1}'
    assert store.schedule_states["p"]["sch-1"].fired == 2
    assert g.book.ready_count == 2


async def test_a_new_owner_continues_without_firing_a_time_twice() -> None:
    store, clock = InMemoryTaskStore(), Clock()
    store.schedules["p"] = {"sch-1": spec()}
    old = grain(store, clock, owner="a")
    await old.activate()
    clock.now = 10
    await old.tick()
    new = grain(store, clock, owner="b")
    clock.now = 15
    await new.activate()
    clock.now = 20
    await new.tick()
    with pytest.raises(StaleEpoch):
        clock.now = 30
        await old.tick()  # the ex-owner, resumed: fenced, fires nothing
    assert runs(store) == [run_id("sch-1", T0 + dt.timedelta(seconds=s)) for s in (10, 20)]
    assert store.schedule_states["p"]["sch-1"].fired == 2


async def test_a_failed_write_fires_the_same_time_again() -> None:
    store, clock = InMemoryTaskStore(), Clock()
    store.schedules["p"] = {"sch-1": spec()}
    g = grain(store, clock)
    await g.activate()
    clock.now = 10
    store.down = True
    with pytest.raises(Exception, match="down"):
        await g.tick()
    store.down = False
    clock.now = 10.5
    await g.tick()
    assert runs(store) == [run_id("sch-1", T0 + dt.timedelta(seconds=10))]


async def test_a_change_record_reloads_the_definition() -> None:
    store, clock = InMemoryTaskStore(), Clock()
    store.schedules["p"] = {"sch-1": spec()}
    g = grain(store, clock)
    await g.activate()
    store.schedules["p"]["sch-1"] = spec(version=2, paused=True)
    await g.admit(AdmitBatch(schedules=("sch-1",)))
    clock.now = 60
    await g.tick()
    assert runs(store) == []
    del store.schedules["p"]["sch-1"]
    await g.admit(AdmitBatch(schedules=("sch-1",)))
    assert "sch-1" not in store.schedule_states["p"]
    assert len(g.schedules.book) == 0


async def test_a_lost_change_record_is_found_by_the_resync() -> None:
    store, clock = InMemoryTaskStore(), Clock()
    store.schedules["p"] = {"sch-1": spec()}
    g = grain(store, clock)
    await g.activate()
    store.schedules["p"]["sch-1"] = spec(version=2, paused=True)
    clock.now = 35  # past the resync period; no record arrived
    await g.tick()
    assert runs(store) == []  # paused before it fired 12:00:10 .. 12:00:30


async def test_overlap_skip_waits_for_the_previous_run_to_end() -> None:
    store, clock = InMemoryTaskStore(), Clock()
    store.schedules["p"] = {"sch-1": spec(overlap=Overlap.SKIP)}
    g = grain(store, clock)
    await g.activate()
    clock.now = 10
    await g.tick()
    (grant,) = await g.poll(worker="w", max_tasks=1, max_bytes=1 << 20)
    clock.now = 20
    await g.tick()  # the 12:00:10 run is still leased: 12:00:20 is skipped
    g.report([Report(token=grant.token, outcome=Outcome.SUCCEEDED, result=b"{}")])
    await g.flush()
    clock.now = 30
    await g.tick()
    fired = [T0 + dt.timedelta(seconds=s) for s in (10, 30)]
    assert runs(store) == [run_id("sch-1", t) for t in fired]
    state = store.schedule_states["p"]["sch-1"]
    assert (state.fired, state.skipped) == (2, 1)
    assert store.rows[("p", run_id("sch-1", fired[0]))].status is Status.SUCCEEDED


async def test_a_jittered_run_waits_as_a_timer() -> None:
    store, clock = InMemoryTaskStore(), Clock()
    store.schedules["p"] = {"sch-1": spec(jitter_s=5)}
    g = grain(store, clock)
    await g.activate()
    clock.now = 10
    await g.tick()
    (task_id,) = runs(store)
    row = store.rows[("p", task_id)]
    assert row.status is Status.SCHEDULED
    assert T0 + dt.timedelta(seconds=10) <= row.due_at < T0 + dt.timedelta(seconds=15)
    clock.now = (row.due_at - T0).total_seconds() - 0.01
    await g.tick()
    assert g.book.ready_count == 0
    clock.now += 0.01
    await g.tick()
    assert g.book.ready_count == 1 and g.book.stats()["queued"] == 1  # due: in the window


async def test_only_the_first_slice_fires() -> None:
    store, clock = InMemoryTaskStore(), Clock()
    store.schedules["p"] = {"sch-1": spec()}
    g = PipelineCore(
        config=PipelineConfig(pipeline_id="p"),
        key=dataclasses.replace(KEY, slice=1),
        owner="a",
        store=store,
        clock=clock.grain_clock(),
    )
    await g.activate()
    clock.now = 30
    await g.tick()
    assert runs(store) == []


async def test_a_schedule_about_to_fire_counts_as_backlog_for_scaling() -> None:
    store, clock = InMemoryTaskStore(), Clock()
    store.schedules["p"] = {
        "sch-1": spec(rule=Every(every_s=3600, anchor=T0 + dt.timedelta(seconds=30))),
        "sch-2": spec(id="sch-2", rule=Every(every_s=3600, anchor=T0 + dt.timedelta(seconds=90))),
        "sch-3": spec(id="sch-3", paused=True),
    }
    g = PipelineCore(
        config=PipelineConfig(pipeline_id="p", lead_s=60),
        key=KEY,
        owner="a",
        store=store,
        clock=clock.grain_clock(),
    )
    await g.activate()
    assert g.snapshot().due_soon == 1  # sch-1 within the minute; sch-2 later; sch-3 paused


async def test_a_grain_far_behind_fires_in_bounded_steps_and_asks_to_wake_again() -> None:
    store, clock = InMemoryTaskStore(), Clock()
    store.schedules["p"] = {
        f"s{i:04d}": spec(id=f"s{i:04d}", rule=Every(every_s=3600, anchor=T0)) for i in range(1200)
    }
    g = grain(store, clock)
    await g.activate()
    clock.now = 3600  # every schedule is due at once
    await g.tick()
    fired = sum(1 for t in store.rows.values() if t.schedule_id)
    assert fired == 1000
    assert g.schedules.due_now()
    assert g.next_timer_in() == 0
    await g.tick()
    assert sum(1 for t in store.rows.values() if t.schedule_id) == 1200
    assert not g.schedules.due_now()

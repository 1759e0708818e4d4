"""A grain with nothing to do ticks slowly, and is back at the fast tick at its first work.

A real actor system on a fake clock; the ticks and flushes the core receives are counted.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from actors.pipeline.actor import (
    KIND,
    Activate,
    Admit,
    PipelineActor,
    Poll,
    ReportBatch,
    Timing,
    grain_id,
)
from actors.pipeline.core import PipelineCore
from actors.pipeline.memory import InMemoryTaskStore
from actors.pipeline.model import (
    AdmitBatch,
    GrainKey,
    GrainSnapshot,
    Grant,
    Outcome,
    PipelineConfig,
    Report,
    Status,
)
from actors.pipeline.recurrence import Every
from actors.pipeline.schedules import ScheduleSpec
from actors.runtime import ActorContext, ActorSystem, FakeClock, KindConfig
from tests.unit.actors.pipeline.grains import Configs, new_task

KEY = GrainKey(pipeline_id="p")
GRAIN = grain_id(KEY)
TIMING = Timing(tick_s=0.5, flush_s=2.0, idle_tick_s=10.0, idle_after_s=5.0)
CONFIG = PipelineConfig(pipeline_id="p", lease_timeout_s=30.0)
#: From activation: the first flush writes the counters, then five quiet seconds.
SLOW_BY_S = TIMING.flush_s + TIMING.idle_after_s + TIMING.tick_s


@dataclass(kw_only=True)
class World:
    system: ActorSystem
    clock: FakeClock
    store: InMemoryTaskStore = field(default_factory=InMemoryTaskStore)
    snapshots: dict[GrainKey, GrainSnapshot] = field(default_factory=dict)
    actors: list[PipelineActor] = field(default_factory=list)
    #: Calls of the core's ``tick`` and ``flush``, once ``count`` was called.
    calls: Counter[str] = field(default_factory=Counter)

    def make(self, key: str, context: ActorContext) -> PipelineActor:
        actor = PipelineActor(
            key=GrainKey.parse(key),
            context=context,
            store=self.store,
            configs=Configs(lease_timeout_s=CONFIG.lease_timeout_s),
            owner="a",
            timing=TIMING,
            snapshots=self.snapshots,
        )
        self.actors.append(actor)
        return actor

    @property
    def actor(self) -> PipelineActor:
        return self.actors[-1]

    @property
    def core(self) -> PipelineCore:
        return self.actor.core

    async def ask(self, message: object) -> Any:
        return await self.system.ask(GRAIN, message)

    async def poll(self) -> asyncio.Future[list[Grant]]:
        future: asyncio.Future[list[Grant]] = await self.ask(
            Poll(worker="w", max_tasks=1, max_bytes=1 << 20)
        )
        return future

    async def until(self, at_s: float) -> None:
        """Advance the clock to ``at_s`` seconds after its start."""
        await self.clock.advance(at_s - self.clock.now())


@pytest.fixture
async def world() -> AsyncIterator[World]:
    clock = FakeClock()
    async with ActorSystem(clock=clock) as system:
        world = World(system=system, clock=clock)
        system.register(KIND, world.make, config=KindConfig(idle_timeout_s=None))
        yield world


def count(world: World, monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Count the core's ticks and flushes from now on."""
    core = world.core
    for name in ("tick", "flush"):
        original = getattr(core, name)

        async def counted(original: Any = original, name: str = name) -> None:
            world.calls[name] += 1
            await original()

        monkeypatch.setattr(core, name, counted)
    return world.calls


async def slowed_down(world: World, monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """An empty grain, activated and left alone until it ticks slowly."""
    await world.ask(Activate())
    calls = count(world, monkeypatch)
    await world.until(SLOW_BY_S)
    assert world.actor.idle
    calls.clear()
    return calls


new = new_task


async def test_an_empty_grain_ticks_slowly_after_its_counters_are_written(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    await world.ask(Activate())
    calls = count(world, monkeypatch)
    await world.until(SLOW_BY_S - TIMING.tick_s - 0.01)
    assert not world.actor.idle and calls["flush"] == 1
    await world.until(SLOW_BY_S)
    assert world.actor.idle and world.snapshots[KEY].idle
    assert world.store.stats["p"] == world.core.book.stats()
    assert world.clock.pending == 1  # one slow tick, no flush
    calls.clear()
    await world.clock.advance(60)
    # At the fast pace: 120 ticks and 30 flushes a minute.
    assert calls["tick"] <= 8 and calls["flush"] == 0


async def test_a_poll_leaves_a_slow_grain_slow_and_an_admission_serves_it_at_once(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = await slowed_down(world, monkeypatch)
    waiting = await world.poll()
    await world.clock.advance(30)
    assert world.actor.idle and not waiting.done()
    now = world.clock.wall()
    await world.ask(Admit(batch=AdmitBatch(new=(new(1, due_at=now),))))
    assert waiting.done() and [g.task.id for g in waiting.result()] == ["t1"]
    assert not world.actor.idle and not world.snapshots[KEY].idle
    calls.clear()
    await world.clock.advance(5)
    assert calls["tick"] >= 9  # the fast pace
    assert world.store.rows[("p", "t1")].status is Status.LEASED  # and its flush


async def test_a_lease_keeps_the_grain_fast_and_expires_on_time(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    await slowed_down(world, monkeypatch)
    await world.ask(Admit(batch=AdmitBatch(new=(new(1, due_at=world.clock.wall()),))))
    assert len(await (await world.poll())) == 1
    granted_at = world.clock.now()
    # The worker dies: no heartbeat, no report.
    while world.clock.now() < granted_at + CONFIG.lease_timeout_s - 1:
        await world.clock.advance(1)
        assert not world.actor.idle and world.core.book.leased_count == 1
    await world.until(granted_at + CONFIG.lease_timeout_s + TIMING.tick_s)
    assert world.core.book.leased_count == 0
    assert world.core.book.totals["retried"] == 1 and not world.actor.idle


async def test_a_reported_lease_lets_the_grain_slow_down_after_its_flush(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    await slowed_down(world, monkeypatch)
    await world.ask(Admit(batch=AdmitBatch(new=(new(1, due_at=world.clock.wall()),))))
    (grant,) = await (await world.poll())
    await world.clock.advance(20)
    assert not world.actor.idle
    _, durable = await world.ask(
        ReportBatch(reports=(Report(token=grant.token, outcome=Outcome.SUCCEEDED),))
    )
    reported_at = world.clock.now()
    await world.clock.advance(TIMING.report_linger_s)
    assert durable.done() and world.store.rows[("p", "t1")].status is Status.SUCCEEDED
    await world.until(reported_at + TIMING.idle_after_s - TIMING.tick_s)
    assert not world.actor.idle
    await world.until(reported_at + TIMING.idle_after_s + TIMING.tick_s)
    assert world.actor.idle
    assert world.store.stats["p"] == world.core.book.stats()


async def test_a_delayed_task_lets_the_grain_slow_down_and_still_fires_on_time(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The actor arms a timer at the due time: the grain needs no fast tick to wait."""
    calls = await slowed_down(world, monkeypatch)
    waiting = await world.poll()
    due_at = world.clock.wall() + dt.timedelta(seconds=30)
    admitted_at = world.clock.now()
    await world.ask(Admit(batch=AdmitBatch(new=(new(1, due_at=due_at),))))
    await world.until(admitted_at + 29.9)
    assert world.actor.idle and not waiting.done()
    # Fast until the admission's counters are flushed and five quiet seconds passed,
    # then slow ticks only: 60 ticks at the fast pace.
    assert calls["tick"] <= SLOW_BY_S / TIMING.tick_s + 30 / TIMING.idle_tick_s + 1
    assert calls["flush"] == 1
    await world.until(admitted_at + 30)
    assert waiting.done() and [g.task.id for g in waiting.result()] == ["t1"]


async def test_an_earlier_timer_rearms_a_slow_grain(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    await slowed_down(world, monkeypatch)
    later = world.clock.wall() + dt.timedelta(seconds=300)
    start = world.clock.now()
    await world.ask(Admit(batch=AdmitBatch(new=(new(1, due_at=later),))))
    await world.until(start + 20)
    assert world.actor.idle
    waiting = await world.poll()
    sooner = world.clock.wall() + dt.timedelta(seconds=7.3)
    await world.ask(Admit(batch=AdmitBatch(new=(new(2, due_at=sooner),))))
    await world.until(start + 27.2)
    assert not waiting.done()
    await world.until(start + 27.3)
    assert waiting.done() and [g.task.id for g in waiting.result()] == ["t2"]


def hourly() -> ScheduleSpec:
    anchor = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    return ScheduleSpec(
        id="s", name="hourly", version=1, rule=Every(every_s=3600, anchor=anchor), data=b"{}"
    )


async def test_a_grain_with_a_schedule_slows_down_and_fires_on_time(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.store.schedules["p"] = {"s": hourly()}
    await world.ask(Activate())
    calls = count(world, monkeypatch)
    await world.until(SLOW_BY_S + TIMING.flush_s)
    assert world.actor.idle
    next_fire = world.core.schedules.book.next_due()
    assert next_fire is not None
    fire_in = (next_fire - world.clock.wall()).total_seconds()
    ticks = calls["tick"]
    await world.clock.advance(fire_in - 0.01)
    assert world.store.schedule_states.get("p", {}).get("s") is None or not any(
        row.status is Status.QUEUED for row in world.store.rows.values()
    )
    assert calls["tick"] - ticks <= fire_in / TIMING.idle_tick_s + 1  # slow ticks only
    await world.clock.advance(0.01)
    assert any(row.status is Status.QUEUED for row in world.store.rows.values())


async def test_a_schedule_change_brings_a_slow_grain_back(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    await slowed_down(world, monkeypatch)
    world.store.schedules["p"] = {"s": hourly()}
    await world.ask(Admit(batch=AdmitBatch(schedules=("s",))))
    assert len(world.core.schedules.book) == 1


async def test_a_schedule_whose_record_was_lost_is_found_at_a_slow_tick(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    await slowed_down(world, monkeypatch)
    world.store.schedules["p"] = {"s": hourly()}
    # The resync compares versions every 30 s from activation; a slow tick runs it.
    await world.until(30 + TIMING.idle_tick_s)
    assert len(world.core.schedules.book) == 1


async def test_counters_that_cannot_be_written_keep_the_grain_fast(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = await slowed_down(world, monkeypatch)
    await world.ask(Admit(batch=AdmitBatch(new=(new(1, due_at=world.clock.wall()),))))
    await world.ask(Admit(batch=AdmitBatch(cancels=("t1",))))
    assert world.core.book.counts[Status.CANCELLED] == 1
    world.store.down = True
    await world.clock.advance(30)
    assert not world.actor.idle and calls["flush"] >= 10
    world.store.down = False
    await world.clock.advance(TIMING.flush_s + TIMING.idle_after_s + TIMING.tick_s)
    assert world.actor.idle
    assert world.store.rows[("p", "t1")].status is Status.CANCELLED
    assert world.store.stats["p"] == world.core.book.stats()

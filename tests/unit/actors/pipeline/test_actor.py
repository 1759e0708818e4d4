"""PipelineActor in a real actor system: the snapshots it publishes for readers outside it."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from actors.pipeline.actor import (
    KIND,
    Activate,
    Admit,
    PipelineActor,
    Poll,
    Timing,
    grain_id,
)
from actors.pipeline.memory import InMemoryTaskStore
from actors.pipeline.model import AdmitBatch, GrainKey, GrainSnapshot, NewTask
from actors.runtime import ActorContext, ActorSystem, FakeClock, KindConfig
from tests.unit.actors.pipeline.grains import Configs, new_task

KEY = GrainKey(pipeline_id="p")
TIMING = Timing(tick_s=0.5, flush_s=2.0)
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@dataclass(kw_only=True)
class World:
    system: ActorSystem
    clock: FakeClock
    store: InMemoryTaskStore = field(default_factory=InMemoryTaskStore)
    snapshots: dict[GrainKey, GrainSnapshot] = field(default_factory=dict)

    def make(self, key: str, context: ActorContext) -> PipelineActor:
        return PipelineActor(
            key=GrainKey.parse(key),
            context=context,
            store=self.store,
            configs=Configs(),
            owner="a",
            timing=TIMING,
            snapshots=self.snapshots,
        )


@pytest.fixture
async def world() -> AsyncIterator[World]:
    clock = FakeClock()
    async with ActorSystem(clock=clock) as system:
        world = World(system=system, clock=clock)
        system.register(KIND, world.make, config=KindConfig(idle_timeout_s=None))
        yield world


def new(i: int) -> NewTask:
    return new_task(i, due_at=T0)


async def test_activation_publishes_a_snapshot(world: World) -> None:
    await world.system.ask(grain_id(KEY), Activate())
    snapshot = world.snapshots[KEY]
    assert (snapshot.key, snapshot.epoch, snapshot.backlog, snapshot.leased) == (KEY, 1, 0, 0)


async def test_an_admission_publishes_its_figures(world: World) -> None:
    await world.system.ask(grain_id(KEY), Admit(batch=AdmitBatch(new=(new(1), new(2)))))
    snapshot = world.snapshots[KEY]
    assert snapshot.backlog == 2 and snapshot.stats["queued"] == 2
    assert snapshot.totals["admitted"] == 2


async def test_a_poll_publishes_nothing_and_the_next_tick_does(world: World) -> None:
    await world.system.ask(grain_id(KEY), Admit(batch=AdmitBatch(new=(new(1),))))
    before = world.snapshots[KEY]
    poll = Poll(worker="w", max_tasks=1, max_bytes=1 << 20)
    grants = await (await world.system.ask(grain_id(KEY), poll))
    assert len(grants) == 1
    assert world.snapshots[KEY] is before  # the hot path leaves the snapshot alone
    await world.clock.advance(TIMING.tick_s)
    after = world.snapshots[KEY]
    assert after.leased == 1 and after.taken_at > before.taken_at


async def test_deactivation_withdraws_the_snapshot(world: World) -> None:
    await world.system.ask(grain_id(KEY), Activate())
    await world.system.deactivate(grain_id(KEY))
    assert KEY not in world.snapshots


async def test_deactivation_leaves_a_newer_incarnations_snapshot(world: World) -> None:
    await world.system.ask(grain_id(KEY), Activate())
    newer = GrainSnapshot(key=KEY, epoch=2, stats={"backlog": 0}, totals={}, leased=0, taken_at=1.0)
    world.snapshots[KEY] = newer  # as the next owner's actor would have published
    await world.system.deactivate(grain_id(KEY))
    assert world.snapshots[KEY] is newer


async def test_a_fenced_grain_withdraws_its_snapshot(world: World) -> None:
    await world.system.ask(grain_id(KEY), Admit(batch=AdmitBatch(new=(new(1),))))
    await world.store.claim(grain=KEY, owner="b")  # another replica took the grain over
    await world.clock.advance(TIMING.flush_s)
    assert not world.system.is_active(grain_id(KEY))
    assert KEY not in world.snapshots

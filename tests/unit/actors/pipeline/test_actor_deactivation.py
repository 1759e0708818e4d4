"""An idle grain deactivates (``Timing.deactivate_after_s``) and comes back with its state;
a poll of an inactive grain is parked by its handle without activating it."""

from __future__ import annotations

import asyncio
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
from actors.pipeline.model import AdmitBatch, GrainKey, GrainSnapshot, NewTask, PipelineConfig
from actors.runtime import ActorContext, ActorSystem, FakeClock, KindConfig
from services.scheduler.handle import GrainHandle
from tests.unit.actors.pipeline.grains import Configs, new_task

KEY = GrainKey(pipeline_id="p")
GRAIN = grain_id(KEY)
TIMING = Timing(
    tick_s=0.5, flush_s=2.0, idle_tick_s=10.0, idle_after_s=5.0, deactivate_after_s=60.0
)
CONFIG = PipelineConfig(pipeline_id="p", lease_timeout_s=30.0)


@dataclass(kw_only=True)
class World:
    system: ActorSystem
    clock: FakeClock
    store: InMemoryTaskStore = field(default_factory=InMemoryTaskStore)
    snapshots: dict[GrainKey, GrainSnapshot] = field(default_factory=dict)
    activations: int = 0
    may_go: bool = True
    handle: GrainHandle | None = None

    def make(self, key: str, context: ActorContext) -> PipelineActor:
        self.activations += 1
        if self.handle is not None:
            self.handle.activated()
        return PipelineActor(
            key=GrainKey.parse(key),
            context=context,
            store=self.store,
            configs=Configs(lease_timeout_s=CONFIG.lease_timeout_s),
            owner="a",
            timing=TIMING,
            snapshots=self.snapshots,
            may_deactivate=lambda _key: self.may_go,
        )

    @property
    def active(self) -> bool:
        return self.system.is_active(GRAIN)


@pytest.fixture
async def world() -> AsyncIterator[World]:
    clock = FakeClock()
    async with ActorSystem(clock=clock) as system:
        world = World(system=system, clock=clock)
        system.register(KIND, world.make, config=KindConfig(idle_timeout_s=None))
        world.handle = GrainHandle(system=system, grain=GRAIN, lease_timeout_s=30.0)
        yield world


def new(i: int, *, now: dt.datetime) -> NewTask:
    return new_task(i, due_at=now)


async def idle_until_gone(world: World) -> None:
    await world.system.ask(GRAIN, Activate())
    await world.clock.advance(2 + 5 + 0.5 + 60 + 10)  # slow, then quiet for a minute
    for _ in range(100):  # the deactivation itself runs on the loop
        if not world.active:
            return
        await asyncio.sleep(0)
    raise AssertionError("the idle grain did not deactivate")


async def test_an_idle_grain_deactivates_and_a_record_brings_it_back_with_its_state(
    world: World,
) -> None:
    await idle_until_gone(world)
    assert KEY not in world.snapshots  # its figures withdrawn: no series, no scaling
    now = world.clock.wall()
    result = await world.system.ask(GRAIN, Admit(batch=AdmitBatch(new=(new(1, now=now),))))
    assert result.admitted == 1 and world.active and world.activations == 2
    assert world.handle is not None
    grants = await world.handle.poll(worker="w", max_tasks=5, max_bytes=1 << 20, wait_s=1)
    assert [g.task.id for g in grants] == ["t1"]


async def test_a_grain_holding_a_lease_or_refused_by_its_scaler_stays(world: World) -> None:
    world.may_go = False
    await world.system.ask(GRAIN, Activate())
    await world.clock.advance(200)
    assert world.active, "deactivated while its workers were above their minimum"
    world.may_go = True
    now = world.clock.wall()
    await world.system.ask(GRAIN, Admit(batch=AdmitBatch(new=(new(1, now=now),))))
    assert world.handle is not None
    grants = await world.handle.poll(worker="w", max_tasks=5, max_bytes=1 << 20, wait_s=1)
    assert len(grants) == 1
    await world.clock.advance(25)  # the lease (30 s) is still held: not quiescent
    assert world.active


async def test_a_grain_with_a_backlog_and_no_worker_ticks_slowly_and_stays(
    world: World,
) -> None:
    now = world.clock.wall()
    await world.system.ask(GRAIN, Admit(batch=AdmitBatch(new=(new(1, now=now),))))
    await world.clock.advance(2 + 5 + 0.5 + 60 + 10)
    assert world.active, "a grain with a task to hand out deactivated"
    assert world.snapshots[KEY].idle  # and ticks slowly: its task waits for a poll
    assert world.handle is not None
    grants = await world.handle.poll(worker="w", max_tasks=5, max_bytes=1 << 20, wait_s=1)
    assert [g.task.id for g in grants] == ["t1"]
    await world.clock.advance(0.5)  # the next fast tick publishes
    assert not world.snapshots[KEY].idle  # a lease to expire: fast again


async def test_a_poll_of_an_inactive_grain_is_parked_and_does_not_activate_it(
    world: World,
) -> None:
    await idle_until_gone(world)
    assert world.handle is not None
    handle = world.handle
    waiting = asyncio.create_task(
        handle.poll(worker="w", max_tasks=5, max_bytes=1 << 20, wait_s=30)
    )
    for _ in range(10):
        await asyncio.sleep(0)
    assert handle.parked == 1 and not world.active and world.activations == 1
    # A record activates it: the parked poll goes to the grain and gets the task.
    now = world.clock.wall()
    await world.system.ask(GRAIN, Admit(batch=AdmitBatch(new=(new(7, now=now),))))
    grants = await asyncio.wait_for(waiting, 5)
    assert [g.task.id for g in grants] == ["t7"] and handle.parked == 0


async def test_a_parked_poll_ends_empty_at_its_wait_without_activating(world: World) -> None:
    await idle_until_gone(world)
    assert world.handle is not None
    handle = world.handle
    waiting = asyncio.create_task(
        handle.poll(worker="w", max_tasks=5, max_bytes=1 << 20, wait_s=0.05)
    )
    assert await asyncio.wait_for(waiting, 5) == []
    assert not world.active and world.activations == 1 and handle.parked == 0


async def test_polls_waiting_in_a_grain_that_deactivates_are_answered_empty(world: World) -> None:
    await world.system.ask(GRAIN, Activate())
    future = await world.system.ask(GRAIN, Poll(worker="w", max_tasks=1, max_bytes=1 << 20))
    await world.clock.advance(2 + 5 + 0.5 + 60 + 10)
    for _ in range(100):
        if future.done():
            break
        await asyncio.sleep(0)
    assert future.done() and future.result() == [] and not world.active


async def gone_within(world: World, seconds: float) -> bool:
    """Advance ``seconds`` of fake time; whether the grain deactivated meanwhile."""
    await world.clock.advance(seconds)
    for _ in range(100):  # the deactivation itself runs on the loop
        if not world.active:
            return True
        await asyncio.sleep(0)
    return False


async def test_a_grain_holding_only_a_far_timer_rests_with_its_wake_up(world: World) -> None:
    """It deactivates like an empty grain, after writing when it must be back: its timer's
    due time less the wake margin (and the pipeline's lead, zero here)."""
    due_at = world.clock.wall() + dt.timedelta(hours=1)
    await world.system.ask(GRAIN, Admit(batch=AdmitBatch(new=(new_task(1, due_at=due_at),))))
    assert await gone_within(world, 2 + 5 + 0.5 + 60 + 10)
    margin = dt.timedelta(seconds=TIMING.wake_margin_s)
    assert world.store.wakeups == {KEY: due_at - margin}
    # Its next activation (a record, a poll's, or the wake-up index's) clears the row.
    await world.system.ask(GRAIN, Activate())
    assert world.store.wakeups == {} and world.active
    assert world.activations == 2


async def test_a_grain_whose_timer_is_near_stays_active_and_fires_it(world: World) -> None:
    """A timer due sooner than the grain would stay idle anyway plus the wake margin
    (60 + 15 s): resting would only wake it again at once."""
    due_at = world.clock.wall() + dt.timedelta(seconds=100)
    await world.system.ask(GRAIN, Admit(batch=AdmitBatch(new=(new_task(1, due_at=due_at),))))
    assert not await gone_within(world, 99)
    assert world.store.wakeups == {}
    waiting = await world.system.ask(GRAIN, Poll(worker="w", max_tasks=5, max_bytes=1 << 20))
    await world.clock.advance(1)
    assert [g.task.id for g in waiting.result()] == ["t1"]


async def test_a_grain_whose_wake_up_cannot_be_written_stays_and_tries_again(
    world: World,
) -> None:
    due_at = world.clock.wall() + dt.timedelta(hours=1)
    await world.system.ask(GRAIN, Admit(batch=AdmitBatch(new=(new_task(1, due_at=due_at),))))
    await world.clock.advance(2 + 5 + 0.5)  # flushed, and slow
    world.store.down = True
    assert not await gone_within(world, 60 + 30)
    assert world.store.wakeups == {}, "its timer would be forgotten with no wake-up row"
    world.store.down = False
    assert await gone_within(world, TIMING.idle_tick_s * 2)
    assert KEY in world.store.wakeups


async def test_a_fenced_grain_does_not_write_a_wake_up(world: World) -> None:
    due_at = world.clock.wall() + dt.timedelta(hours=1)
    await world.system.ask(GRAIN, Admit(batch=AdmitBatch(new=(new_task(1, due_at=due_at),))))
    await world.clock.advance(2 + 5 + 0.5)
    await world.store.claim(grain=KEY, owner="b")  # another replica took it over
    assert await gone_within(world, 60 + 30)
    assert world.store.wakeups == {}  # the new owner's to write

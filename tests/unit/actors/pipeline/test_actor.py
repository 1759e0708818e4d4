"""PipelineActor in a real actor system: the snapshots it publishes for readers outside it."""

from __future__ import annotations

import asyncio
import datetime as dt
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
from actors.pipeline.admitting import ADMIT_CHUNK
from actors.pipeline.memory import InMemoryTaskStore
from actors.pipeline.model import (
    AdmitBatch,
    GrainKey,
    GrainSnapshot,
    NewTask,
    Outcome,
    Report,
    Status,
)
from actors.pipeline.ports import Admission
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


class GatedStore(InMemoryTaskStore):
    """Each admission of a full chunk waits for its own gate: a slow database."""

    def __init__(self) -> None:
        super().__init__()
        self.gates: list[asyncio.Event] = []
        self.chunk_started = asyncio.Event()

    async def admit(self, **kwargs: Any) -> Admission:
        if len(kwargs["tasks"]) == ADMIT_CHUNK:
            gate = asyncio.Event()
            self.gates.append(gate)
            self.chunk_started.set()
            await gate.wait()
        return await super().admit(**kwargs)


async def test_a_poll_and_a_report_go_between_the_transactions_of_a_large_admission(
    world: World,
) -> None:
    """Tasks due later being admitted in chunks (timers exist) do not hold back a worker:
    its poll is answered, and its report made durable, before the admission ends."""
    store = GatedStore()
    world.store = store
    grain = grain_id(KEY)
    later = dt.timedelta(hours=1)
    await world.system.ask(
        grain, Admit(batch=AdmitBatch(new=(new(0), new_task(1, due_at=T0 + later))))
    )
    backlog = tuple(new_task(i, due_at=T0 + later) for i in range(2, 2 + 3 * ADMIT_CHUNK))
    admission = asyncio.create_task(world.system.ask(grain, Admit(batch=AdmitBatch(new=backlog))))

    async def next_chunk() -> None:
        async with asyncio.timeout(5):
            await store.chunk_started.wait()
        store.chunk_started.clear()

    await next_chunk()
    poll = asyncio.create_task(
        world.system.ask(grain, Poll(worker="w", max_tasks=1, max_bytes=1 << 20))
    )
    await asyncio.sleep(0.01)
    assert not poll.done()  # it waits in the mailbox behind the admission
    store.gates[0].set()  # the first chunk commits
    async with asyncio.timeout(5):
        grants = await (await poll)
    assert [grant.task.id for grant in grants] == ["t0"]
    await next_chunk()
    # The lease is written before the next chunk: were the replica to die during the
    # rest of the admission, the next owner would not run t0 again at once.
    assert store.rows[(KEY.pipeline_id, "t0")].status is Status.LEASED
    report = Report(token=grants[0].token, outcome=Outcome.SUCCEEDED)
    acked = asyncio.create_task(world.system.ask(grain, ReportBatch(reports=(report,))))
    await asyncio.sleep(0.01)
    store.gates[1].set()  # the second chunk commits; the report goes next, then a flush
    async with asyncio.timeout(5):
        _acks, durable = await acked
        await durable
    await next_chunk()
    assert not admission.done()  # its third chunk waits for its gate
    assert store.rows[(KEY.pipeline_id, "t0")].status is Status.SUCCEEDED
    store.gates[2].set()
    async with asyncio.timeout(5):
        result = await admission
    assert result.admitted == 3 * ADMIT_CHUNK

"""A replica's grains share a bound on activations in flight: a herd of them reads the
store a few at a time, and each activation finishes in turn instead of all at the end."""

from __future__ import annotations

import asyncio

from actors.pipeline.actor import KIND, Activate, PipelineActor, Timing, grain_id
from actors.pipeline.memory import InMemoryTaskStore
from actors.pipeline.model import GrainKey
from actors.runtime import ActorContext, ActorSystem, FakeClock, KindConfig
from tests.unit.actors.pipeline.grains import Configs


class SlowClaims(InMemoryTaskStore):
    """Counts the claims in flight; each waits for the test to let it through."""

    def __init__(self) -> None:
        super().__init__()
        self.in_flight = 0
        self.most = 0
        self.gate = asyncio.Event()

    async def claim(self, *, grain: GrainKey, owner: str) -> int:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            await self.gate.wait()
            return await super().claim(grain=grain, owner=owner)
        finally:
            self.in_flight -= 1


async def test_activations_beyond_the_bound_wait_their_turn() -> None:
    store = SlowClaims()
    slots = asyncio.Semaphore(3)

    def make(key: str, context: ActorContext) -> PipelineActor:
        return PipelineActor(
            key=GrainKey.parse(key),
            context=context,
            store=store,
            configs=Configs(),
            owner="a",
            timing=Timing(),
            activations=slots,
        )

    async with ActorSystem(clock=FakeClock()) as system:
        system.register(KIND, make, config=KindConfig(idle_timeout_s=None))
        grains = [grain_id(GrainKey(pipeline_id=f"p{i}")) for i in range(20)]
        asks = [asyncio.create_task(system.ask(grain, Activate())) for grain in grains]
        for _ in range(50):
            await asyncio.sleep(0)
        assert store.in_flight == 3  # the others wait for a slot, not for the store
        store.gate.set()
        await asyncio.gather(*asks)
        assert store.most == 3
        assert all(system.is_active(grain) for grain in grains)
        assert sorted(store.epochs.values()) == [1] * 20

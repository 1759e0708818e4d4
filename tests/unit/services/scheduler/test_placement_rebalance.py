"""A rebalance listener returns at once for an assignment (aiokafka sends no heartbeat
until it returns: a takeover that hosts for longer than the session timeout got the replica
dropped from the group, again and again); the follower's loop hosts the shards after,
and a revocation cancels a hosting still in flight before it releases."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import TopicPartition

from services.placement import PLACEMENT_TOPIC
from services.scheduler.following import PlacementFollower, _Rebalance


class _SlowReplica:
    def __init__(self) -> None:
        self.shards: set[int] = set()
        self.reconciles = 0
        self.cancelled = 0
        self.released: list[set[int]] = []
        self.hosting = asyncio.Event()

    def owns(self, shard: int) -> bool:
        return shard in self.shards

    async def take_shards(self, shards: set[int]) -> None:
        self.shards = set(shards)

    async def release_shards(self, shards: set[int]) -> None:
        self.released.append(set(shards))
        self.shards -= shards

    async def reconcile(self) -> None:
        self.reconciles += 1
        self.hosting.set()
        try:
            await asyncio.sleep(3600)  # hosting thousands of grains
        except asyncio.CancelledError:
            self.cancelled += 1
            raise

    async def drop(self, pipeline_id: str) -> None:
        pass

    def changed(self, pipeline_id: str) -> None:
        pass


class _Consumer:
    def __init__(self) -> None:
        self.listener: _Rebalance | None = None

    def subscribe(self, topics: list[str], listener: _Rebalance) -> None:
        self.listener = listener

    async def getmany(self, timeout_ms: int) -> dict[Any, list[Any]]:
        await asyncio.sleep(0.01)
        return {}


async def test_an_assignment_returns_at_once_and_the_loop_hosts_after() -> None:
    replica = _SlowReplica()
    follower = PlacementFollower(
        replica=replica, bootstrap="", group="g", member="m", rescan_s=3600
    )
    consumer = _Consumer()
    loop = asyncio.create_task(follower._follow(consumer))
    try:
        await asyncio.sleep(0.05)
        assert consumer.listener is not None
        assigned = [TopicPartition(PLACEMENT_TOPIC, p) for p in (1, 2)]
        async with asyncio.timeout(1):  # the listener does not wait for the hosting
            await consumer.listener.on_partitions_assigned(assigned)
        assert replica.shards == {1, 2}
        async with asyncio.timeout(2):
            await replica.hosting.wait()  # the loop hosts them
        # A revocation cancels the hosting in flight, then releases.
        async with asyncio.timeout(2):
            await consumer.listener.on_partitions_revoked([assigned[0]])
        assert replica.cancelled == 1
        assert replica.released == [{1}]
        assert not loop.done()  # the loop goes on after a cancelled hosting
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
    assert replica.reconciles == 1

"""A replica keeps trying to join placement when Kafka is away as it starts.

Found by the chaos soak (``services/chaos``): a replica restarted a moment before the
broker was killed failed its placement consumer's bootstrap, and the placement task
ended there: the process lived on, serving gRPC, owning no shard and logging nothing
more until it was stopped.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError

from services.scheduler import following
from services.scheduler.following import PlacementFollower


class _FlakyConsumer:
    """Fails to start the first ``failures`` times (across instances), then works."""

    failures = 2
    started = 0
    subscribed = asyncio.Event()

    def __init__(self, **_: Any) -> None:
        pass

    async def start(self) -> None:
        if _FlakyConsumer.failures:
            _FlakyConsumer.failures -= 1
            raise KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 1)]")
        _FlakyConsumer.started += 1

    async def stop(self) -> None:
        pass

    def subscribe(self, topics: list[str], listener: object) -> None:
        _FlakyConsumer.subscribed.set()

    async def getmany(self, timeout_ms: int) -> dict[object, list[object]]:
        await asyncio.sleep(timeout_ms / 1000)
        return {}


class _Replica:
    """A replica that owns every shard and hosts nothing."""

    def __init__(self) -> None:
        self.reconciled = 0
        self.dropped: list[str] = []
        self.changes: list[str] = []

    def owns(self, shard: int) -> bool:
        return shard != 63

    async def take_shards(self, shards: set[int]) -> None:
        pass

    async def release_shards(self, shards: set[int]) -> None:
        pass

    async def reconcile(self) -> None:
        self.reconciled += 1

    async def drop(self, pipeline_id: str) -> None:
        self.dropped.append(pipeline_id)

    def changed(self, pipeline_id: str) -> None:
        self.changes.append(pipeline_id)


def _follower(replica: _Replica) -> PlacementFollower:
    return PlacementFollower(
        replica=replica, bootstrap="127.0.0.1:1", group="g", member="m", rescan_s=60
    )


async def test_placement_retries_joining_until_kafka_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(following, "AIOKafkaConsumer", _FlakyConsumer)
    monkeypatch.setattr(following, "_JOIN_RETRY_FIRST_S", 0.01)
    placement = asyncio.create_task(_follower(_Replica()).run())
    try:
        await asyncio.wait_for(_FlakyConsumer.subscribed.wait(), 5)
        assert _FlakyConsumer.started == 1 and _FlakyConsumer.failures == 0
        assert not placement.done()
    finally:
        placement.cancel()
        await asyncio.gather(placement, return_exceptions=True)


async def test_a_fetch_of_placement_records_costs_one_reconcile() -> None:
    """A thousand pipelines created together made a replica scan the pipelines table
    once per record; drops stay one by one, the other records share one reconcile."""
    from protos.wsched.v1 import events_pb2

    kind = events_pb2.PlacementEvent

    def record(
        pipeline_id: str,
        shard: int,
        k: events_pb2.PlacementEvent.Kind.ValueType = kind.KIND_CREATED,
    ) -> bytes:
        return kind(pipeline_id=pipeline_id, shard=shard, kind=k).SerializeToString()

    replica = _Replica()
    await _follower(replica).apply(
        [record(f"p{i}", i % 8) for i in range(1000)]
        + [record("gone", 1, kind.KIND_DELETED), record("elsewhere", 63), b"\xff\x00", None]
    )
    assert replica.reconciled == 1
    assert replica.dropped == ["gone"]
    assert {f"p{i}" for i in range(1000)} | {"gone"} <= set(replica.changes)
    assert "elsewhere" not in replica.changes  # not this replica's shard

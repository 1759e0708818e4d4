"""A replica keeps trying to join placement when Kafka is away as it starts.

Found by the chaos soak (``services/chaos``): a replica restarted a moment before the
broker was killed failed its placement consumer's bootstrap, and the placement task
ended there: the process lived on, serving gRPC, owning no shard and logging nothing
more until it was stopped.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError

from services.scheduler import host as host_module
from services.scheduler.host import SchedulerHost
from services.settings import Settings


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


async def test_placement_retries_joining_until_kafka_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(host_module, "AIOKafkaConsumer", _FlakyConsumer)
    monkeypatch.setattr(host_module, "_JOIN_RETRY_FIRST_S", 0.01)
    settings = Settings(
        kafka_bootstrap="127.0.0.1:1", database_url=f"sqlite:///{tmp_path / 'db.sqlite'}"
    )
    replica = SchedulerHost(settings=settings)
    placement = asyncio.create_task(replica._run_placement())
    try:
        await asyncio.wait_for(_FlakyConsumer.subscribed.wait(), 5)
        assert _FlakyConsumer.started == 1 and _FlakyConsumer.failures == 0
        assert not placement.done()
    finally:
        placement.cancel()
        await asyncio.gather(placement, return_exceptions=True)

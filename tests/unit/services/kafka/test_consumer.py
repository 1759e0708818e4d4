"""The in-memory ``PartitionConsumer`` keeps the consumer contract (Kafka's in integration)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from services.kafka.consumer import MemoryConsumer, MemoryLog
from tests.ports.partition_consumer import PARTITIONS, PartitionConsumerContract


class MemoryTopic:
    def __init__(self) -> None:
        self.log = MemoryLog(partitions=len(PARTITIONS))

    async def append(self, partition: int, values: Sequence[bytes]) -> None:
        for value in values:
            self.log.append(partition, value)

    def consumer(self) -> MemoryConsumer:
        return MemoryConsumer(log=self.log)


class TestMemoryConsumer(PartitionConsumerContract):
    quiet_ms = 1

    @pytest.fixture
    def topic(self) -> MemoryTopic:
        return MemoryTopic()


async def test_a_failing_commit_raises_and_records_nothing() -> None:
    log = MemoryLog(partitions=1)
    log.fail_commits = True
    consumer = MemoryConsumer(log=log)
    consumer.assign([0])
    with pytest.raises(ConnectionError):
        await consumer.commit({0: 1})
    assert log.committed == {}

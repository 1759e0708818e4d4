"""What every ``PartitionConsumer`` does: ordered reads, seeks, commits, pause and resume.

A test module subclasses :class:`PartitionConsumerContract` and provides a ``topic``
fixture: an empty two-partition topic it can append to and open consumers of.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

from services.kafka.consumer import ConsumedRecord, PartitionConsumer

PARTITIONS = (0, 1)
#: How long a read waits for records that should arrive; only reached when broken.
GUARD_S = 20.0


class TopicUnderTest(Protocol):
    async def append(self, partition: int, values: Sequence[bytes]) -> None: ...

    def consumer(self) -> PartitionConsumer:
        """A new, unstarted consumer; all of one topic's consumers share one group."""
        ...


async def read(consumer: PartitionConsumer, count: int) -> list[ConsumedRecord]:
    """Exactly ``count`` records, however many fetches they take."""
    got: list[ConsumedRecord] = []
    async with asyncio.timeout(GUARD_S):
        while len(got) < count:
            batches = await consumer.getmany(timeout_ms=500, max_records=count - len(got))
            for partition, records in batches.items():
                assert all(r.partition == partition for r in records)
                got.extend(records)
    return got


def values(records: Sequence[ConsumedRecord], partition: int) -> list[bytes | None]:
    return [r.value for r in records if r.partition == partition]


class PartitionConsumerContract:
    #: How long a read waits to show that nothing arrives (a twin needs no network time).
    quiet_ms = 300

    async def test_assigned_partitions_are_read_in_offset_order(
        self, topic: TopicUnderTest
    ) -> None:
        await topic.append(0, [b"a0", b"a1", b"a2"])
        await topic.append(1, [b"b0"])
        consumer = topic.consumer()
        await consumer.start()
        try:
            consumer.assign(PARTITIONS)
            got = await read(consumer, 4)
            assert values(got, 0) == [b"a0", b"a1", b"a2"] and values(got, 1) == [b"b0"]
            assert [r.offset for r in got if r.partition == 0] == [0, 1, 2]
            assert await consumer.position(0) == 3 and await consumer.position(1) == 1
            assert await consumer.end_offsets(PARTITIONS) == {0: 3, 1: 1}
        finally:
            await consumer.stop()

    async def test_seek_moves_the_next_read(self, topic: TopicUnderTest) -> None:
        await topic.append(0, [b"a0", b"a1", b"a2", b"a3"])
        consumer = topic.consumer()
        await consumer.start()
        try:
            consumer.assign(PARTITIONS)
            consumer.seek(0, 2)
            assert values(await read(consumer, 2), 0) == [b"a2", b"a3"]
            consumer.seek(0, 1)  # back again: a replay
            assert values(await read(consumer, 3), 0) == [b"a1", b"a2", b"a3"]
        finally:
            await consumer.stop()

    async def test_a_new_consumer_resumes_from_the_commit(self, topic: TopicUnderTest) -> None:
        await topic.append(0, [b"a0", b"a1", b"a2"])
        first = topic.consumer()
        await first.start()
        try:
            first.assign(PARTITIONS)
            await read(first, 3)
            await first.commit({0: 2})
        finally:
            await first.stop()
        second = topic.consumer()
        await second.start()
        try:
            second.assign(PARTITIONS)
            assert values(await read(second, 1), 0) == [b"a2"]
        finally:
            await second.stop()

    async def test_a_paused_partition_is_held_back_until_resumed(
        self, topic: TopicUnderTest
    ) -> None:
        await topic.append(0, [b"a0"])
        await topic.append(1, [b"b0", b"b1"])
        consumer = topic.consumer()
        await consumer.start()
        try:
            consumer.assign(PARTITIONS)
            consumer.pause([1])
            assert values(await read(consumer, 1), 0) == [b"a0"]
            assert await consumer.getmany(timeout_ms=self.quiet_ms, max_records=10) == {}
            assert await consumer.position(1) == 0
            consumer.resume([1])
            assert values(await read(consumer, 2), 1) == [b"b0", b"b1"]
        finally:
            await consumer.stop()

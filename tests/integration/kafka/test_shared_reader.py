"""One ``SharedKafkaReader`` for many grains, against the real broker.

The contract every ``PartitionConsumer`` keeps holds for a view of it, and what sharing
adds holds too: each view reads only its topic, a grain arriving or leaving moves nobody
else's position, and a view whose forwarder stops taking records holds a bounded number
and blocks no other view, losing nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import pytest
from aiokafka import AIOKafkaProducer

from services.kafka.admin import KafkaTopicAdmin
from services.kafka.consumer import ConsumedRecord
from services.kafka.shared import ReaderOfItsOwn, SharedKafkaReader, SharedPartitionConsumer
from services.placement import pipeline_topic
from tests.ports.partition_consumer import PARTITIONS, PartitionConsumerContract, read

pytestmark = pytest.mark.integration

#: Small, so that a view fills up after a few hundred records.
MAX_RECORDS = 100


async def _append(bootstrap: str, topic: str, partition: int, values: Sequence[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        sent = [await producer.send(topic, value, partition=partition) for value in values]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def _topic(bootstrap: str, name: str) -> str:
    await KafkaTopicAdmin(bootstrap=bootstrap).create_pipeline_topic(name, len(PARTITIONS))
    return pipeline_topic(name)


class SharedTopic:
    def __init__(self, *, bootstrap: str, topic: str, reader: SharedKafkaReader) -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self._reader = reader

    async def append(self, partition: int, values: Sequence[bytes]) -> None:
        await _append(self._bootstrap, self._topic, partition, values)

    def consumer(self) -> SharedPartitionConsumer:
        return self._reader.view(self._topic)


@pytest.fixture
async def reader(kafka_bootstrap: str, kafka_group: str) -> AsyncIterator[SharedKafkaReader]:
    async with SharedKafkaReader(
        bootstrap=kafka_bootstrap, group_id=kafka_group, max_records=MAX_RECORDS
    ) as shared:
        yield shared


class TestSharedPartitionConsumer(PartitionConsumerContract):
    @pytest.fixture
    async def topic(
        self, kafka_bootstrap: str, kafka_topic: str, reader: SharedKafkaReader
    ) -> SharedTopic:
        name = await _topic(kafka_bootstrap, kafka_topic)
        return SharedTopic(bootstrap=kafka_bootstrap, topic=name, reader=reader)


def _values(records: Sequence[ConsumedRecord]) -> list[bytes | None]:
    return [r.value for r in sorted(records, key=lambda r: (r.partition, r.offset))]


async def test_each_view_reads_its_own_topic_and_a_newcomer_moves_nobody(
    kafka_bootstrap: str, kafka_topic: str, reader: SharedKafkaReader
) -> None:
    first, second = [await _topic(kafka_bootstrap, f"{kafka_topic}-{n}") for n in "ab"]
    await _append(kafka_bootstrap, first, 0, [b"a0", b"a1"])
    await _append(kafka_bootstrap, second, 1, [b"b0"])
    one = reader.view(first)
    one.assign(PARTITIONS)
    assert _values(await read(one, 2)) == [b"a0", b"a1"]
    # A second grain arrives: the shared consumer is assigned again, and the first view
    # goes on after what it read, not from its start or its (absent) commit.
    two = reader.view(second)
    two.assign(PARTITIONS)
    await _append(kafka_bootstrap, first, 0, [b"a2"])
    assert _values(await read(one, 1)) == [b"a2"]
    assert _values(await read(two, 1)) == [b"b0"]
    assert reader.partitions == 4
    await two.stop()  # it leaves: the first still goes on where it was
    assert reader.partitions == 2
    await _append(kafka_bootstrap, first, 1, [b"a3"])
    assert _values(await read(one, 1)) == [b"a3"]
    assert await one.getmany(timeout_ms=300, max_records=10) == {}
    with pytest.raises(ValueError):
        reader.view(first).assign([0])  # a partition is read by one view at a time
    await one.stop()


async def test_shards_read_one_topic_through_views_of_their_own_partitions(
    kafka_bootstrap: str, kafka_topic: str, reader: SharedKafkaReader
) -> None:
    """The shared topic: one view per shard, each its partition; a stalled grain's
    catch-up reads a partition again on a reader of its own, moving nobody."""
    topic = await _topic(kafka_bootstrap, kafka_topic)
    await _append(kafka_bootstrap, topic, 0, [b"a0", b"a1", b"a2"])
    await _append(kafka_bootstrap, topic, 1, [b"b0"])
    shard_a, shard_b = reader.view(topic), reader.view(topic)
    shard_a.assign([0])
    shard_b.assign([1])
    assert _values(await read(shard_a, 3)) == [b"a0", b"a1", b"a2"]
    assert _values(await read(shard_b, 1)) == [b"b0"]
    catch_up = ReaderOfItsOwn(bootstrap=kafka_bootstrap, topic=topic)
    await catch_up.start()
    try:
        catch_up.assign([0])
        catch_up.seek(0, 1)
        assert _values(await read(catch_up, 2)) == [b"a1", b"a2"]
    finally:
        await catch_up.stop()
    await _append(kafka_bootstrap, topic, 0, [b"a3"])
    assert _values(await read(shard_a, 1)) == [b"a3"]  # the shard's view went on
    await shard_b.stop()
    await _append(kafka_bootstrap, topic, 0, [b"a4"])
    assert _values(await read(shard_a, 1)) == [b"a4"]
    await shard_a.stop()


async def test_a_stalled_view_holds_a_bounded_batch_blocks_nobody_and_loses_nothing(
    kafka_bootstrap: str, kafka_topic: str, reader: SharedKafkaReader
) -> None:
    stalled_topic, live_topic = [await _topic(kafka_bootstrap, f"{kafka_topic}-{n}") for n in "sl"]
    backlog = [f"s{i:04d}".encode() for i in range(5 * MAX_RECORDS)]
    await _append(kafka_bootstrap, stalled_topic, 0, backlog)
    stalled = reader.view(stalled_topic)
    stalled.assign(PARTITIONS)
    live = reader.view(live_topic)
    live.assign(PARTITIONS)
    # The stalled view's forwarder takes nothing (its grain's store is down); the other's
    # records keep flowing through the same consumer.
    for round_ in range(3):
        values = [f"l{round_}-{i}".encode() for i in range(50)]
        await _append(kafka_bootstrap, live_topic, round_ % 2, values)
        got = await read(live, len(values))
        assert [r.value for r in got] == values
    assert MAX_RECORDS <= stalled.held <= 2 * MAX_RECORDS
    assert await stalled.position(0) == 0
    # The grain is back: everything arrives once, in order, in batches it asks for.
    got = await read(stalled, len(backlog))
    assert [r.value for r in got] == backlog
    assert [r.offset for r in got] == list(range(len(backlog)))
    assert await stalled.getmany(timeout_ms=300, max_records=10) == {}
    assert await stalled.end_offsets([0, 1]) == {0: len(backlog), 1: 0}


async def test_a_grain_that_leaves_and_comes_back_resumes_from_its_commit(
    kafka_bootstrap: str, kafka_topic: str, reader: SharedKafkaReader
) -> None:
    topic = await _topic(kafka_bootstrap, kafka_topic)
    await _append(kafka_bootstrap, topic, 0, [b"a0", b"a1", b"a2"])
    first = reader.view(topic)
    first.assign(PARTITIONS)
    await read(first, 3)
    await first.commit({0: 1})
    await first.stop()
    again = reader.view(topic)
    again.assign(PARTITIONS)
    assert _values(await read(again, 2)) == [b"a1", b"a2"]
    await again.stop()

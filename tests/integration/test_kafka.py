"""aiokafka against the real Apache Kafka broker."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

pytestmark = pytest.mark.integration


async def _create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(topic, num_partitions=partitions, replication_factor=1)]
        )
        # The broker answers CreateTopics before its metadata cache knows the topic's
        # partitions: a describe right after it may list none for a moment.
        async with asyncio.timeout(10):
            while True:
                [described] = await admin.describe_topics([topic])
                if described["error_code"] == 0 and described["partitions"]:
                    break
                await asyncio.sleep(0.05)
        assert len(described["partitions"]) == partitions
    finally:
        await admin.close()


async def _consume(bootstrap: str, topic: str, group: str, count: int) -> list[tuple[bytes, bytes]]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        got: list[tuple[bytes, bytes]] = []
        while len(got) < count:
            batches = await consumer.getmany(timeout_ms=10_000)
            assert batches, f"no records within 10 s after {len(got)} of {count}"
            got.extend((r.key, r.value) for records in batches.values() for r in records)
        await consumer.commit()
        return got
    finally:
        await consumer.stop()


async def test_produce_with_acks_all_and_consume_with_a_committing_group(
    kafka_bootstrap: str, kafka_topic: str, kafka_group: str
) -> None:
    await _create_topic(kafka_bootstrap, kafka_topic, partitions=3)
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap, acks="all", enable_idempotence=True
    )
    await producer.start()
    try:
        sent = {f"task-{i}".encode(): f"payload-{i}".encode() for i in range(30)}
        for key, value in sent.items():
            await producer.send_and_wait(kafka_topic, value, key=key)
    finally:
        await producer.stop()

    received = await _consume(kafka_bootstrap, kafka_topic, kafka_group, len(sent))
    assert dict(received) == sent

    # The group's committed offsets cover every record, spread over the 3 partitions.
    probe = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=kafka_group)
    await probe.start()
    try:
        committed = [await probe.committed(TopicPartition(kafka_topic, p)) for p in range(3)]
    finally:
        await probe.stop()
    assert sum(c or 0 for c in committed) == len(sent)
    assert sum(1 for c in committed if c) >= 2, committed

"""aiokafka against the real Apache Kafka broker."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import ConsumerRecord

from services.kafka.producer import KafkaProducer, Record

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


async def test_our_producer_sends_many_records_as_whole_batches_where_send_would_put_them(
    kafka_bootstrap: str, kafka_topic: str, kafka_group: str
) -> None:
    """``KafkaProducer.send`` with many records builds batches itself (``send_batch``):
    each keyed record must land on the partition ``send`` would pick for its key, in the
    order given, with its headers, over more batches than one (a small batch size)."""
    await _create_topic(kafka_bootstrap, kafka_topic, partitions=3)
    producer = KafkaProducer(bootstrap=kafka_bootstrap, max_batch_bytes=2048, linger_ms=0)
    keys = [f"task-{i}" for i in range(300)]
    header = ("wsched-pipeline", b"p1")
    try:
        await producer.send(
            [
                Record(topic=kafka_topic, key=k.encode(), value=str(n).encode(), headers=(header,))
                for n, k in enumerate(keys)
            ]
        )
        # The same keys one by one, through aiokafka's own send and partitioner.
        for n, k in enumerate(keys[:30]):
            await producer.send(
                [Record(topic=kafka_topic, key=k.encode(), value=f"again-{n}".encode())]
            )
        # An explicit partition is kept.
        await producer.send(
            [
                Record(topic=kafka_topic, key=b"x", value=f"p2-{n}".encode(), partition=2)
                for n in range(5)
            ]
        )
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        kafka_topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=kafka_group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        got: list[ConsumerRecord[bytes, bytes]] = []
        while len(got) < 335:
            batches = await consumer.getmany(timeout_ms=10_000)
            assert batches, f"no records within 10 s after {len(got)}"
            got.extend(r for records in batches.values() for r in records)
    finally:
        await consumer.stop()
    partition_of = {r.key: r.partition for r in got if not r.value.startswith((b"again", b"p2"))}
    assert len(partition_of) == 300
    assert len(set(partition_of.values())) == 3
    for r in got:
        if r.value.startswith(b"again"):
            assert r.partition == partition_of[r.key], r.key
        elif r.value.startswith(b"p2"):
            assert r.partition == 2
        else:
            assert r.headers == (header,)
    for p in range(3):
        batch_values = [int(r.value) for r in got if r.partition == p and r.value.isdigit()]
        assert batch_values == sorted(batch_values)

"""``KafkaPartitionConsumer`` against the real broker keeps the consumer contract."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from aiokafka import AIOKafkaProducer

from services.kafka.admin import KafkaTopicAdmin
from services.kafka.consumer import KafkaPartitionConsumer
from services.placement import pipeline_topic
from tests.ports.partition_consumer import PARTITIONS, PartitionConsumerContract

pytestmark = pytest.mark.integration


class KafkaTopic:
    def __init__(self, *, bootstrap: str, topic: str, group: str) -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self._group = group

    async def append(self, partition: int, values: Sequence[bytes]) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self._bootstrap, acks="all")
        await producer.start()
        try:
            for value in values:
                await producer.send_and_wait(self._topic, value, partition=partition)
        finally:
            await producer.stop()

    def consumer(self) -> KafkaPartitionConsumer:
        return KafkaPartitionConsumer(
            bootstrap=self._bootstrap, topic=self._topic, group_id=self._group
        )


class TestKafkaPartitionConsumer(PartitionConsumerContract):
    @pytest.fixture
    async def topic(self, kafka_bootstrap: str, kafka_topic: str, kafka_group: str) -> KafkaTopic:
        # A pipeline topic, made the way the API makes them (it waits for the leaders).
        await KafkaTopicAdmin(bootstrap=kafka_bootstrap).create_pipeline_topic(
            kafka_topic, len(PARTITIONS)
        )
        return KafkaTopic(
            bootstrap=kafka_bootstrap, topic=pipeline_topic(kafka_topic), group=kafka_group
        )

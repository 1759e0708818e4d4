"""The API's ``EventSource`` on Kafka: ``wsched.events`` read without a consumer group.

Every API process needs every event (its waiters may wait on any pipeline), so each
assigns itself all partitions and starts at their end: nothing to commit, no rebalance.
A resuming SSE stream replays one partition with a consumer of its own, briefly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from services.kafka.admin import KafkaTopicAdmin
from services.live.source import Deliver, Delivered, Position, Wants, every_pipeline
from services.live.wire import EVENTS_TOPIC, BadEvent, decode

log = logging.getLogger("wsched.kafka.events")

#: A replay longer than this ends where it got to (the live events follow).
_REPLAY_BOUND_S = 30.0


class KafkaEventSource:
    def __init__(self, *, bootstrap: str, admin: KafkaTopicAdmin) -> None:
        self._bootstrap = bootstrap
        self._admin = admin

    def _consumer(self, *, reset: str) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset=reset,
            fetch_max_wait_ms=200,
            client_id="wsched-api-events",
        )

    async def follow(self, deliver: Deliver, *, wants: Wants = every_pipeline) -> None:
        await self._admin.ensure_events_topic()
        count = await self._admin.partitions(EVENTS_TOPIC) or 1
        partitions = [TopicPartition(EVENTS_TOPIC, p) for p in range(count)]
        consumer = self._consumer(reset="latest")
        try:  # started inside: a cancel during start must still stop it
            await consumer.start()
            consumer.assign(partitions)
            await consumer.seek_to_end(*partitions)
            log.info("following %s (%d partitions) from its end", EVENTS_TOPIC, count)
            while True:
                batches = await consumer.getmany(timeout_ms=1000)
                for records in batches.values():
                    for record in records:
                        # Not decoded unless someone here waits for or streams its
                        # pipeline: every status change of every pipeline crosses this
                        # loop (py-spy: 6 % of the API's CPU under batch submits).
                        if record.key is None or wants(record.key):
                            _deliver(record, deliver)
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()

    async def end_offset(self, partition: int) -> int:
        consumer = self._consumer(reset="earliest")
        try:  # started inside: a cancel during start must still stop it
            await consumer.start()
            tp = TopicPartition(EVENTS_TOPIC, partition)
            ends: dict[TopicPartition, int] = await consumer.end_offsets([tp])
            return ends[tp]
        finally:
            await consumer.stop()

    async def replay(self, partition: int, start: int, end: int) -> AsyncIterator[Delivered]:
        if end <= start:
            return
        consumer = self._consumer(reset="earliest")  # an expired start: the oldest kept
        try:  # started inside: a cancel during start must still stop it
            await consumer.start()
            tp = TopicPartition(EVENTS_TOPIC, partition)
            consumer.assign([tp])
            consumer.seek(tp, start)
            # A deadline, not asyncio.timeout: that would cancel the caller between yields.
            loop = asyncio.get_running_loop()
            give_up = loop.time() + _REPLAY_BOUND_S
            while await consumer.position(tp) < end:
                if loop.time() > give_up:
                    log.warning("replay of %s:%d stopped at its bound", EVENTS_TOPIC, partition)
                    return
                batches = await consumer.getmany(tp, timeout_ms=1000)
                for record in batches.get(tp, []):
                    if record.offset >= end:
                        return
                    delivered = _decoded(record)
                    if delivered is not None:
                        yield delivered
        finally:
            await consumer.stop()


def _decoded(record: ConsumerRecord[bytes, bytes]) -> Delivered | None:
    try:
        event = decode(record.value)
    except BadEvent as err:
        log.debug("skipped %s:%d: %s", record.partition, record.offset, err)
        return None
    return Delivered(
        position=Position(partition=record.partition, offset=record.offset), event=event
    )


def _deliver(record: ConsumerRecord[bytes, bytes], deliver: Deliver) -> None:
    delivered = _decoded(record)
    if delivered is not None:
        deliver(delivered)

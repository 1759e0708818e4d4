"""A shared reader whose aiokafka consumer is broken for good (its group coordination task
died: every fetch fails the same way) starts a new one, assigned the views' partitions
and sought to what was handed out, so the grains' records flow again."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from services.kafka import shared
from services.kafka.shared import SharedKafkaReader

TP = TopicPartition("t", 0)


class Record:
    def __init__(self, offset: int) -> None:
        self.offset, self.key, self.value, self.headers = offset, None, b"v", ()
        self.timestamp = 0


class FakeConsumer:
    made: ClassVar[list[FakeConsumer]] = []

    def __init__(self, **_: Any) -> None:
        self.broken = not FakeConsumer.made  # the first one breaks
        self.assigned: list[TopicPartition] = []
        self.sought: dict[TopicPartition, int] = {}
        self.stopped = False
        self.paused: set[TopicPartition] = set()
        self.unsubscribed = False
        FakeConsumer.made.append(self)

    async def start(self) -> None: ...

    async def stop(self) -> None:
        self.stopped = True

    def assign(self, tps: list[TopicPartition]) -> None:
        self.assigned = tps

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.sought[tp] = offset

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def pause(self, *tps: TopicPartition) -> None:
        self.paused.update(tps)

    def unsubscribe(self) -> None:
        self.unsubscribed = True

    async def getmany(self, *, timeout_ms: int, max_records: int) -> dict[Any, Any]:
        await asyncio.sleep(0.001)
        if self.broken:
            raise KafkaError("KafkaError: Unexpected error during coordination AssertionError()")
        offset = self.sought.pop(TP, None)
        return {TP: [Record(offset)]} if offset is not None else {}


async def test_a_broken_consumer_is_replaced_and_reading_resumes_where_it_was(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    FakeConsumer.made = []
    monkeypatch.setattr(shared, "AIOKafkaConsumer", FakeConsumer)
    monkeypatch.setattr(shared, "_RETRY_S", 0.001)
    reader = SharedKafkaReader(bootstrap="unused:9092", group_id="g")
    await reader.start()
    try:
        view = reader.view("t")
        view.assign([0])
        view.seek(0, 41)
        async with asyncio.timeout(5):
            got: dict[int, list[Any]] = {}
            while not got:
                got = await view.getmany(timeout_ms=100, max_records=10)
        assert [r.offset for r in got[0]] == [41]
        first, second = FakeConsumer.made[:2]
        assert first.stopped and second.assigned == [TP]
    finally:
        await reader.stop()


async def test_with_no_partition_wanted_the_last_assignment_stays_paused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No unsubscribe: with the broker away it races the group coordination task, whose
    assertion breaks the consumer for good (the case above)."""
    FakeConsumer.made = []
    monkeypatch.setattr(shared, "AIOKafkaConsumer", FakeConsumer)
    reader = SharedKafkaReader(bootstrap="unused:9092", group_id="g")
    await reader.start()
    try:
        consumer = FakeConsumer.made[0]
        consumer.broken = False
        view = reader.view("t")
        view.assign([0])
        async with asyncio.timeout(5):
            while consumer.assigned != [TP]:
                await asyncio.sleep(0.001)
        view.assign([])
        async with asyncio.timeout(5):
            while not consumer.paused:
                await asyncio.sleep(0.001)
        assert consumer.paused == {TP} and consumer.assigned == [TP]
        assert not consumer.unsubscribed
    finally:
        await reader.stop()

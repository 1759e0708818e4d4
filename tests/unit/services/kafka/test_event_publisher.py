"""The grains' Kafka event sink never blocks: a full queue drops, counts and logs."""

from __future__ import annotations

import logging

import pytest

from actors.pipeline.events import EventBatch
from actors.pipeline.model import GrainKey
from services.kafka.event_publisher import KafkaEventPublisher


async def test_a_full_queue_drops_counts_and_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    drops: list[int] = []
    publisher = KafkaEventPublisher(
        bootstrap="127.0.0.1:1", max_queued=2, on_drop=drops.append, clock=lambda: 0.0
    )
    batch = EventBatch(grain=GrainKey(pipeline_id="p"), changes=())
    with caplog.at_level(logging.WARNING, logger="wsched.kafka.events"):
        for _ in range(5):
            publisher.publish(batch)  # returns at once: nothing drains it (never started)
    assert publisher.dropped == 3
    assert drops == [1, 1, 1]
    assert len([r for r in caplog.records if "dropped" in r.getMessage()]) == 1

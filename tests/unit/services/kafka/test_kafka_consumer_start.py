"""A Kafka consumer whose start fails is closed, not leaked.

Found by the chaos soak (``services/chaos``): while the broker was down, every retry of
a pipeline's forwarder left an open ``AIOKafkaConsumer`` behind ("Unclosed
AIOKafkaConsumer" in the replica's log), one per reconcile. The replica's one shared
consumer (``services/kafka/shared.py``) keeps that rule.
"""

from __future__ import annotations

import asyncio
import gc

import pytest
from aiokafka.errors import KafkaConnectionError

from services.infra.process import free_port
from services.kafka.shared import SharedKafkaReader


async def test_a_failed_start_closes_the_consumer() -> None:
    unclosed: list[str] = []
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: unclosed.append(str(context["message"])))
    try:
        reader = SharedKafkaReader(bootstrap=f"127.0.0.1:{free_port()}", group_id="g")
        with pytest.raises(KafkaConnectionError):
            await reader.start()
        await reader.stop()  # a stop after a failed start is harmless
        del reader
        gc.collect()
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(previous)

    assert not [m for m in unclosed if "Unclosed AIOKafkaConsumer" in m]

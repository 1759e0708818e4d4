"""The grains' ``EventSink`` on Kafka: fire-and-forget into ``wsched.events`` (D6).

A grain calls ``publish`` inside its mailbox right after a commit; it must never wait
for the broker. Batches go into a bounded queue drained by one task per scheduler
process; when the queue is full (the broker is slow or gone) the batch is dropped,
counted and logged: a lost event only delays a waiter to its timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from types import TracebackType
from typing import Self

from aiokafka import AIOKafkaProducer

from actors.pipeline.events import EventBatch
from services.live.wire import EVENTS_TOPIC, encode

log = logging.getLogger("wsched.kafka.events")

#: At most one "dropped" warning per this many seconds (with the count since the last).
_DROP_LOG_EVERY_S = 10.0


class KafkaEventPublisher:
    """Use as ``async with KafkaEventPublisher(bootstrap=...) as events``."""

    def __init__(
        self,
        *,
        bootstrap: str,
        max_queued: int = 10_000,
        on_drop: Callable[[int], None] = lambda _n: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._bootstrap = bootstrap
        self._queue: asyncio.Queue[EventBatch] = asyncio.Queue(maxsize=max_queued)
        self._on_drop = on_drop
        self._clock = clock
        self._dropped_unlogged = 0
        self._logged_at = float("-inf")
        self.dropped = 0
        self.sent = 0
        self._task: asyncio.Task[None] | None = None

    def publish(self, batch: EventBatch) -> None:
        try:
            self._queue.put_nowait(batch)
        except asyncio.QueueFull:
            self._dropped(1, "the queue is full (is Kafka slow or down?)")

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def start(self) -> None:
        self._task = asyncio.create_task(self._drain(), name="events publisher")

    async def stop(self) -> None:
        """Send what the last flushes queued (for at most 5 s), then stop."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await self._queue.join()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _drain(self) -> None:
        """Produce queued batches; restart the producer after a failure, forever."""
        while True:
            producer = AIOKafkaProducer(
                bootstrap_servers=self._bootstrap,
                acks=1,
                linger_ms=2,
                client_id="wsched-events",
            )
            try:
                await producer.start()
                await self._send_forever(producer)
            except asyncio.CancelledError:
                raise
            except Exception as err:  # noqa: BLE001 - aiokafka raises many types; retried
                log.warning("events publisher: %s: %s; retrying in 1 s", type(err).__name__, err)
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(Exception):
                    await producer.stop()

    async def _send_forever(self, producer: AIOKafkaProducer) -> None:
        while True:
            batch = await self._queue.get()
            try:
                for key, value in encode(batch):
                    # ``send`` only waits for room in the producer's buffer; delivery
                    # is not awaited: nobody would be served by waiting for it.
                    delivery = await producer.send(EVENTS_TOPIC, value=value, key=key)
                    delivery.add_done_callback(self._delivered)
            except Exception:
                self._dropped(1, "the producer failed")
                raise
            finally:
                self._queue.task_done()

    def _delivered(self, delivery: asyncio.Future[object]) -> None:
        if delivery.cancelled() or delivery.exception() is not None:
            self._dropped(1, f"the broker refused it: {delivery.exception()!r}")
        else:
            self.sent += 1

    def _dropped(self, count: int, why: str) -> None:
        self.dropped += count
        self._dropped_unlogged += count
        self._on_drop(count)
        now = self._clock()
        if now - self._logged_at >= _DROP_LOG_EVERY_S:
            log.warning(
                "events publisher: %d event batch(es) dropped: %s; waiters answer at "
                "their timeout instead",
                self._dropped_unlogged,
                why,
            )
            self._dropped_unlogged = 0
            self._logged_at = now

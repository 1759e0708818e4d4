"""Producing task and placement events, with a deadline on the broker's acknowledgement.

One long-lived :class:`KafkaProducer` per API process. A call returns once every record
it produced is acknowledged by all in-sync replicas (``acks=all``, idempotent producer),
or raises :class:`BrokerUnavailable` when the deadline passes first: the API then answers
503 instead of hanging. Records of a call that timed out may still be delivered later
(at-least-once): clients that retry should resubmit with the same task ids.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder

from protos.wsched.v1 import events_pb2
from services.kafka.records import (
    OutgoingTask,
    Record,
    cancel_record,
    placement_record,
    purge_record,
    requeue_record,
    schedule_record,
    submit_records,
)
from services.placement import PLACEMENT_TOPIC, SHARED_TOPIC, Route, pipeline_id_of

#: The records' names, imported from here by their users as before the split.
__all__ = [
    "BrokerUnavailable",
    "EventProducer",
    "KafkaProducer",
    "MemoryProducer",
    "OutgoingTask",
    "Record",
    "placement_record",
    "submit_records",
]

log = logging.getLogger("wsched.kafka.producer")


class BrokerUnavailable(Exception):
    """The broker did not acknowledge within the deadline (or could not be reached)."""


class EventProducer(Protocol):
    """Task events go where the pipeline's :class:`Route` says (its own topic, or its
    shard's partition of the shared one); placement events to the placement topic."""

    async def submit(self, route: Route, tasks: Sequence[OutgoingTask]) -> None: ...

    async def cancel(self, route: Route, task_id: str, *, reason: str = "") -> None: ...

    async def requeue(self, route: Route, task_id: str) -> None: ...

    async def schedule_changed(self, route: Route, schedule_id: str, version: int) -> None: ...

    async def purge(self, route: Route, task_id: str, *, finished_before_ms: int) -> None: ...

    async def placement(
        self, pipeline_id: str, shard: int, kind: events_pb2.PlacementEvent.Kind.ValueType
    ) -> None: ...


def _now_ms() -> int:
    return int(time.time() * 1000)


# -- the real producer ----------------------------------------------------------------------


def _retrieve(future: asyncio.Future[object]) -> None:
    # A send abandoned at the deadline may fail later; reading its exception keeps asyncio
    # from logging "exception was never retrieved" for an outcome we already reported.
    if not future.cancelled():
        future.exception()


async def _send_one(producer: AIOKafkaProducer, record: Record) -> asyncio.Future[object]:
    """One record through ``send``: it joins the batch already filling for its partition,
    so concurrent single submits share produce requests."""
    future: asyncio.Future[object] = await producer.send(
        record.topic,
        record.value,
        key=record.key,
        partition=record.partition,
        headers=list(record.headers) or None,
    )
    future.add_done_callback(_retrieve)
    return future


async def _send_batched(
    producer: AIOKafkaProducer,
    records: Sequence[Record],
    sent: list[tuple[asyncio.Future[object], int]],
) -> None:
    """Many records as whole batches, one future per batch (appended to ``sent`` with its
    record count as it goes). Profiled under batch submits of 1,000, ``send`` per record
    took about a fifth of the API's CPU: a metadata lookup that copies the topic's
    partitions into a set, a future and a callback each, and resolving them all.

    A keyed record without a partition goes where ``send`` would put it: the default
    partitioner (murmur2 of the key) over the topic's partitions, so that every record
    about a task, sent either way, lands on one partition in order."""
    partitions: dict[str, list[int]] = {}
    groups: dict[tuple[str, int], list[Record]] = {}
    for record in records:
        partition = record.partition
        if partition is None:
            if record.topic not in partitions:
                partitions[record.topic] = sorted(await producer.partitions_for(record.topic))
            partition = _PARTITIONER(record.key, partitions[record.topic], [])
        groups.setdefault((record.topic, partition), []).append(record)
    for (topic, partition), group in groups.items():
        batch = producer.create_batch()
        count = 0
        for record in group:
            headers = list(record.headers)
            key, value = record.key, record.value
            if batch.append(timestamp=None, key=key, value=value, headers=headers) is not None:
                count += 1
                continue
            # Full: send it, and start the next with this record (the first record of a
            # batch is always taken, as Kafka's own clients do).
            sent.append((await _send_batch(producer, batch, topic, partition), count))
            batch = producer.create_batch()
            batch.append(timestamp=None, key=key, value=value, headers=headers)
            count = 1
        sent.append((await _send_batch(producer, batch, topic, partition), count))


async def _send_batch(
    producer: AIOKafkaProducer, batch: BatchBuilder, topic: str, partition: int
) -> asyncio.Future[object]:
    batch.close()  # no other send joins it: its future is its records' alone
    future: asyncio.Future[object] = await producer.send_batch(batch, topic, partition=partition)
    future.add_done_callback(_retrieve)
    return future


_PARTITIONER = DefaultPartitioner()


class KafkaProducer:
    """The :class:`EventProducer` on Kafka: ``acks=all``, idempotent, byte-bounded batches.

    Started lazily and restarted after a failed start, so that an API that came up while
    the broker was down starts producing once it is back, without a restart.
    """

    def __init__(
        self,
        *,
        bootstrap: str,
        deadline_s: float = 5.0,
        linger_ms: int = 5,
        max_batch_bytes: int = 512 * 1024,
        max_request_bytes: int = 1024 * 1024,
        client_id: str = "wsched-api",
        clock_ms: Callable[[], int] = _now_ms,
    ) -> None:
        self._bootstrap = bootstrap
        self._deadline_s = deadline_s
        self._options = {
            "acks": "all",
            "enable_idempotence": True,
            "linger_ms": linger_ms,
            "max_batch_size": max_batch_bytes,
            "max_request_size": max_request_bytes,
            "client_id": client_id,
        }
        self._clock_ms = clock_ms
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    @property
    def deadline_s(self) -> float:
        return self._deadline_s

    async def start(self) -> None:
        """Connect now if the broker is there; otherwise the first produce retries."""
        try:
            async with asyncio.timeout(self._deadline_s):
                await self._started()
        except (BrokerUnavailable, TimeoutError) as err:
            log.warning("Kafka producer not started yet: %s", str(err) or "no answer in time")

    async def stop(self) -> None:
        async with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    async def __aenter__(self) -> KafkaProducer:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    async def submit(self, route: Route, tasks: Sequence[OutgoingTask]) -> None:
        await self.send(submit_records(route, tasks, now_ms=self._clock_ms()))

    async def cancel(self, route: Route, task_id: str, *, reason: str = "") -> None:
        await self.send([cancel_record(route, task_id, reason=reason, now_ms=self._clock_ms())])

    async def requeue(self, route: Route, task_id: str) -> None:
        await self.send([requeue_record(route, task_id, now_ms=self._clock_ms())])

    async def schedule_changed(self, route: Route, schedule_id: str, version: int) -> None:
        record = schedule_record(route, schedule_id, version=version, now_ms=self._clock_ms())
        await self.send([record])

    async def purge(self, route: Route, task_id: str, *, finished_before_ms: int) -> None:
        record = purge_record(
            route, task_id, finished_before_ms=finished_before_ms, now_ms=self._clock_ms()
        )
        await self.send([record])

    async def placement(
        self, pipeline_id: str, shard: int, kind: events_pb2.PlacementEvent.Kind.ValueType
    ) -> None:
        await self.send([placement_record(pipeline_id, shard, kind)])

    async def send(self, records: Sequence[Record]) -> None:
        """Produce ``records`` and wait for all their acks, within the deadline."""
        sent: list[tuple[asyncio.Future[object], int]] = []
        try:
            async with asyncio.timeout(self._deadline_s):
                producer = await self._started()
                if len(records) == 1:
                    sent.append((await _send_one(producer, records[0]), 1))
                else:
                    await _send_batched(producer, records, sent)
                futures = [future for future, _ in sent]
                # One future (a single submit): awaited alone, not gathered.
                await (futures[0] if len(futures) == 1 else asyncio.gather(*futures))
        except TimeoutError as err:
            acked = sum(
                count
                for future, count in sent
                if future.done() and not future.cancelled() and not future.exception()
            )
            raise BrokerUnavailable(
                f"Kafka at {self._bootstrap} acknowledged {acked} of {len(records)} records "
                f"within {self._deadline_s:g} s"
            ) from err
        except BrokerUnavailable:
            raise
        except Exception as err:  # aiokafka's errors have no common base worth naming
            raise BrokerUnavailable(
                f"Kafka at {self._bootstrap}: {type(err).__name__}: {err}"
            ) from err

    async def _started(self) -> AIOKafkaProducer:
        if self._producer is not None:  # every call but the first: no lock to take
            return self._producer
        async with self._lock:
            if self._producer is not None:
                return self._producer
            if not self._bootstrap:
                raise BrokerUnavailable("Kafka is not configured: set WSCHED_KAFKA_BOOTSTRAP")
            producer = AIOKafkaProducer(bootstrap_servers=self._bootstrap, **self._options)
            try:
                await producer.start()
            except BaseException as err:
                await producer.stop()  # a half-started client still holds connections
                if isinstance(err, Exception):
                    raise BrokerUnavailable(
                        f"cannot connect to Kafka at {self._bootstrap}: {type(err).__name__}: {err}"
                    ) from err
                raise
            self._producer = producer
            return producer


# -- in memory ------------------------------------------------------------------------------


class MemoryProducer:
    """The :class:`EventProducer` in memory, for unit tests.

    Keeps every record it was given; ``fail`` (a message) makes every call raise
    :class:`BrokerUnavailable`, as a broker that does not acknowledge would.
    """

    def __init__(self, *, clock_ms: Callable[[], int] = _now_ms) -> None:
        self.records: list[Record] = []
        self.fail: str | None = None
        self._clock_ms = clock_ms

    def task_events(self, pipeline_id: str) -> list[events_pb2.TaskEvent]:
        """The pipeline's task events in the order sent, whichever topic they went to (the
        shared topic carries other pipelines' too)."""
        events = (
            events_pb2.TaskEvent.FromString(r.value)
            for r in self.records
            if r.topic == SHARED_TOPIC or pipeline_id_of(r.topic) is not None
        )
        return [event for event in events if event.pipeline_id == pipeline_id]

    def placements(self) -> list[events_pb2.PlacementEvent]:
        return [
            events_pb2.PlacementEvent.FromString(r.value)
            for r in self.records
            if r.topic == PLACEMENT_TOPIC
        ]

    async def _send(self, records: Sequence[Record]) -> None:
        if self.fail is not None:
            raise BrokerUnavailable(self.fail)
        self.records.extend(records)

    async def submit(self, route: Route, tasks: Sequence[OutgoingTask]) -> None:
        await self._send(submit_records(route, tasks, now_ms=self._clock_ms()))

    async def cancel(self, route: Route, task_id: str, *, reason: str = "") -> None:
        await self._send([cancel_record(route, task_id, reason=reason, now_ms=self._clock_ms())])

    async def requeue(self, route: Route, task_id: str) -> None:
        await self._send([requeue_record(route, task_id, now_ms=self._clock_ms())])

    async def schedule_changed(self, route: Route, schedule_id: str, version: int) -> None:
        record = schedule_record(route, schedule_id, version=version, now_ms=self._clock_ms())
        await self._send([record])

    async def purge(self, route: Route, task_id: str, *, finished_before_ms: int) -> None:
        record = purge_record(
            route, task_id, finished_before_ms=finished_before_ms, now_ms=self._clock_ms()
        )
        await self._send([record])

    async def placement(
        self, pipeline_id: str, shard: int, kind: events_pb2.PlacementEvent.Kind.ValueType
    ) -> None:
        await self._send([placement_record(pipeline_id, shard, kind)])

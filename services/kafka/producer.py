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
from dataclasses import dataclass
from typing import Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder

from actors.pipeline.retry import RetryOverride
from protos.wsched.v1 import events_pb2
from services.kafka.consumer import TRACEPARENT
from services.placement import PLACEMENT_TOPIC, SHARED_TOPIC, Route, pipeline_id_of

log = logging.getLogger("wsched.kafka.producer")

SCHEMA_VERSION = 1


class BrokerUnavailable(Exception):
    """The broker did not acknowledge within the deadline (or could not be reached)."""


@dataclass(frozen=True, kw_only=True)
class OutgoingTask:
    id: str
    #: The client's JSON object, as bytes; carried as is.
    data: bytes
    data_sha256: bytes
    due_at_ms: int = 0
    #: The deadline in ms since the epoch; 0: none.
    expires_at_ms: int = 0
    #: The task's own retry policy over its pipeline's; None: the pipeline's.
    retry: RetryOverride | None = None
    #: A schedule's run (triggered or backfilled): the schedule and its nominal time.
    schedule_id: str | None = None
    fire_at_ms: int = 0
    #: The task's own execution timeout over its pipeline's; None: the pipeline's.
    execution_timeout_s: float | None = None
    #: The W3C traceparent of the task's submit span; None: not traced.
    trace_parent: str | None = None


@dataclass(frozen=True, kw_only=True)
class Record:
    topic: str
    key: bytes
    value: bytes
    partition: int | None = None
    headers: tuple[tuple[str, bytes], ...] = ()


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


# -- encoding ------------------------------------------------------------------------------


def _envelope(pipeline_id: str, task_id: str, now_ms: int) -> events_pb2.TaskEvent:
    return events_pb2.TaskEvent(
        schema_version=SCHEMA_VERSION,
        pipeline_id=pipeline_id,
        task_id=task_id,
        produced_at_ms=now_ms,
    )


def _record(
    route: Route, key: str, event: events_pb2.TaskEvent, *headers: tuple[str, bytes]
) -> Record:
    """A task event where its route says; keyed by ``key`` (the task's or schedule's id),
    so that all records about one task land in order on one partition (the route's own
    partition on the shared topic, where the header names the pipeline)."""
    return Record(
        topic=route.topic,
        key=key.encode(),
        value=event.SerializeToString(),
        partition=route.partition,
        headers=(*route.headers, *headers),
    )


def submit_records(route: Route, tasks: Sequence[OutgoingTask], *, now_ms: int) -> list[Record]:
    """One record per task, as ``_record`` makes them. The route's topic, partition and
    headers are worked out once (each is computed from the pipeline id: a CRC and a
    format per record were a tenth of the API's CPU under batch submits)."""
    topic, partition, route_headers = route.topic, route.partition, route.headers
    records = []
    for task in tasks:
        event = _envelope(route.pipeline_id, task.id, now_ms)
        submit = event.submit
        submit.data = task.data
        submit.due_at_ms = task.due_at_ms
        submit.expires_at_ms = task.expires_at_ms
        if task.retry is not None:
            _put_retry(submit.retry, task.retry)
        if task.schedule_id is not None:
            submit.schedule_id = task.schedule_id
            submit.fire_at_ms = task.fire_at_ms
        if task.execution_timeout_s is not None:
            submit.execution_timeout_s = task.execution_timeout_s
        submit.data_sha256 = task.data_sha256
        headers = route_headers
        if task.trace_parent is not None:
            # In the event, to be stored with the task; in the header, where Kafka tooling
            # and other consumers look for it.
            submit.trace_parent = task.trace_parent
            headers = (*route_headers, (TRACEPARENT, task.trace_parent.encode()))
        records.append(
            Record(
                topic=topic,
                key=task.id.encode(),
                value=event.SerializeToString(),
                partition=partition,
                headers=headers,
            )
        )
    return records


def cancel_record(route: Route, task_id: str, *, reason: str, now_ms: int) -> Record:
    event = _envelope(route.pipeline_id, task_id, now_ms)
    event.cancel.reason = reason
    # Same topic and key as the submit, so the cancel lands after it on the same partition.
    return _record(route, task_id, event)


def requeue_record(route: Route, task_id: str, *, now_ms: int) -> Record:
    event = _envelope(route.pipeline_id, task_id, now_ms)
    event.requeue.SetInParent()
    return _record(route, task_id, event)


def schedule_record(route: Route, schedule_id: str, *, version: int, now_ms: int) -> Record:
    event = _envelope(route.pipeline_id, schedule_id, now_ms)
    event.schedule_changed.version = version
    return _record(route, schedule_id, event)


def purge_record(route: Route, task_id: str, *, finished_before_ms: int, now_ms: int) -> Record:
    event = _envelope(route.pipeline_id, task_id, now_ms)
    event.purge.finished_before_ms = finished_before_ms
    # Keyed like the task's other records: a requeue and a purge apply in the order sent.
    return _record(route, task_id, event)


def placement_record(
    pipeline_id: str, shard: int, kind: events_pb2.PlacementEvent.Kind.ValueType
) -> Record:
    event = events_pb2.PlacementEvent(
        schema_version=SCHEMA_VERSION, pipeline_id=pipeline_id, shard=shard, kind=kind
    )
    return Record(
        topic=PLACEMENT_TOPIC,
        key=pipeline_id.encode(),
        value=event.SerializeToString(),
        partition=shard,
    )


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


def _put_retry(into: events_pb2.RetryPolicy, retry: RetryOverride) -> None:
    into.max_attempts = retry.max_attempts or 0
    if retry.backoff is not None:
        b = retry.backoff
        into.backoff.initial_s, into.backoff.multiplier = b.initial_s, b.multiplier
        into.backoff.max_s, into.backoff.jitter = b.max_s, b.jitter

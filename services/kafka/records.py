"""The records of task and placement events: what the API's producer sends, encoded.

Split from ``producer.py`` (the producers themselves), which imports these names."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from actors.pipeline.retry import RetryOverride
from protos.wsched.v1 import events_pb2
from services.kafka.consumer import TRACEPARENT
from services.placement import PLACEMENT_TOPIC, Route

SCHEMA_VERSION = 1


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


def _put_retry(into: events_pb2.RetryPolicy, retry: RetryOverride) -> None:
    into.max_attempts = retry.max_attempts or 0
    if retry.backoff is not None:
        b = retry.backoff
        into.backoff.initial_s, into.backoff.multiplier = b.initial_s, b.multiplier
        into.backoff.max_s, into.backoff.jitter = b.max_s, b.jitter

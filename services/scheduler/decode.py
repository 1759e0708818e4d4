"""Turn records of a pipeline's topic into domain events, or a reason to quarantine them."""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from actors.pipeline.model import NewTask, Purge
from actors.pipeline.retry import Backoff, RetryOverride, check_execution_timeout
from protos.wsched.v1 import events_pb2
from services.observability import valid_traceparent

SCHEMA_VERSION = 1


@dataclass(frozen=True, kw_only=True)
class CancelEvent:
    task_id: str


@dataclass(frozen=True, kw_only=True)
class RequeueEvent:
    task_id: str


@dataclass(frozen=True, kw_only=True)
class ScheduleChangedEvent:
    schedule_id: str


@dataclass(frozen=True, kw_only=True)
class Undecodable:
    """A record kept aside (quarantined): counted and skipped, never retried."""

    reason: str
    raw: bytes


Event = NewTask | CancelEvent | RequeueEvent | Purge | ScheduleChangedEvent | Undecodable


def _ms(value: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(value / 1000, tz=dt.UTC)


def decode(
    raw: bytes | None, *, pipeline_id: str, timestamp_ms: int, trace_parent: bytes | None = None
) -> Event:
    """Decode one record value. Never raises: a bad record becomes ``Undecodable``.

    ``trace_parent`` is the record's header, for an event that does not carry its own.
    """
    if raw is None:
        return Undecodable(reason="empty record (tombstone)", raw=b"")
    event = events_pb2.TaskEvent()
    try:
        event.ParseFromString(raw)
    except DecodeError as err:
        return Undecodable(reason=f"not a TaskEvent: {err}", raw=raw)
    if event.schema_version != SCHEMA_VERSION:
        return Undecodable(reason=f"unknown schema_version {event.schema_version}", raw=raw)
    if event.pipeline_id != pipeline_id:
        return Undecodable(reason=f"event for pipeline {event.pipeline_id!r}", raw=raw)
    if not event.task_id:
        return Undecodable(reason="event without a task id", raw=raw)
    try:
        return _domain(event, raw=raw, timestamp_ms=timestamp_ms, trace_parent=trace_parent)
    except ValueError as err:  # a value out of its bounds (a retry policy, say)
        return Undecodable(reason=f"invalid task event: {err}", raw=raw)


def _domain(
    event: events_pb2.TaskEvent, *, raw: bytes, timestamp_ms: int, trace_parent: bytes | None
) -> Event:
    kind = event.WhichOneof("kind")
    if kind == "submit":
        submit = event.submit
        digest = submit.data_sha256 or hashlib.sha256(submit.data).digest()
        created = _ms(event.produced_at_ms or timestamp_ms)
        due = _ms(submit.due_at_ms) if submit.due_at_ms else created
        return NewTask(
            id=event.task_id,
            data=submit.data,
            data_sha256=digest,
            due_at=due,
            created_at=created,
            expires_at=_ms(submit.expires_at_ms) if submit.expires_at_ms else None,
            retry=_retry(submit) if submit.HasField("retry") else None,
            schedule_id=submit.schedule_id or None,
            fire_at=_ms(submit.fire_at_ms) if submit.fire_at_ms else None,
            execution_timeout_s=_timeout(submit.execution_timeout_s),
            trace_parent=_trace_parent(submit.trace_parent or trace_parent),
        )
    if kind == "cancel":
        return CancelEvent(task_id=event.task_id)
    if kind == "requeue":
        return RequeueEvent(task_id=event.task_id)
    if kind == "schedule_changed":
        return ScheduleChangedEvent(schedule_id=event.task_id)
    if kind == "purge":
        return Purge(task_id=event.task_id, finished_before=_ms(event.purge.finished_before_ms))
    return Undecodable(reason="event of no known kind", raw=raw)


def _trace_parent(value: str | bytes | None) -> str | None:
    # Checked, not trusted: a bad value is dropped rather than fail the batch. Untraced
    # records (tracing off) skip the check.
    return valid_traceparent(value) if value else None


def _retry(submit: events_pb2.SubmitTask) -> RetryOverride:
    """The task's own retry policy; a value out of bounds raises ValueError (quarantined)."""
    policy = submit.retry
    backoff = None
    if policy.HasField("backoff"):
        b = policy.backoff
        backoff = Backoff(
            initial_s=b.initial_s, multiplier=b.multiplier, max_s=b.max_s, jitter=b.jitter
        )
    return RetryOverride(max_attempts=policy.max_attempts or None, backoff=backoff)


def _timeout(seconds: float) -> float | None:
    """The task's own execution timeout (0: none); out of bounds raises ValueError."""
    return check_execution_timeout(seconds) if seconds else None


def pipeline_of(raw: bytes | None) -> str | None:
    """The pipeline a shared topic record without its ``wsched-pipeline`` header names in
    its event; None if it names none (such a record is quarantined)."""
    if raw is None:
        return None
    event = events_pb2.TaskEvent()
    try:
        event.ParseFromString(raw)
    except DecodeError:
        return None
    return event.pipeline_id or None

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from actors.pipeline.model import NewTask, Purge
from actors.pipeline.retry import Backoff
from protos.wsched.v1 import events_pb2
from services.scheduler.decode import CancelEvent, RequeueEvent, Undecodable, decode


def event(**fields: Any) -> bytes:
    base: dict[str, Any] = {"schema_version": 1, "pipeline_id": "p1", "task_id": "t1"}
    return events_pb2.TaskEvent(**{**base, **fields}).SerializeToString()


def test_submit_carries_the_raw_data_and_its_digest() -> None:
    raw = event(produced_at_ms=1_700_000_000_000, submit=events_pb2.SubmitTask(data=b'{"a": 1}'))
    got = decode(raw, pipeline_id="p1", timestamp_ms=0)
    assert isinstance(got, NewTask)
    assert got.data == b'{"a": 1}' and got.data_sha256 == hashlib.sha256(b'{"a": 1}').digest()
    assert got.due_at == got.created_at and got.created_at.year == 2023


def test_cancel_and_requeue() -> None:
    assert decode(
        event(cancel=events_pb2.CancelTask()), pipeline_id="p1", timestamp_ms=0
    ) == CancelEvent(task_id="t1")
    assert decode(
        event(requeue=events_pb2.RequeueTask()), pipeline_id="p1", timestamp_ms=0
    ) == RequeueEvent(task_id="t1")


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (None, "tombstone"),
        (b"\xff\xff\xff", "not a TaskEvent"),
        (event(schema_version=2, submit=events_pb2.SubmitTask()), "schema_version 2"),
        (event(pipeline_id="other", submit=events_pb2.SubmitTask()), "pipeline 'other'"),
        (event(task_id="", submit=events_pb2.SubmitTask()), "without a task id"),
        (event(), "no known kind"),
    ],
)
def test_bad_records_are_quarantined_with_a_reason(raw: bytes | None, reason: str) -> None:
    got = decode(raw, pipeline_id="p1", timestamp_ms=0)
    assert isinstance(got, Undecodable) and reason in got.reason


def test_a_task_may_carry_its_own_retry_policy() -> None:
    own = events_pb2.RetryPolicy(
        max_attempts=7,
        backoff=events_pb2.Backoff(initial_s=0.5, multiplier=3, max_s=60, jitter=0),
    )
    raw = event(submit=events_pb2.SubmitTask(data=b"{}", retry=own))
    task = decode(raw, pipeline_id="p1", timestamp_ms=1000)
    assert isinstance(task, NewTask) and task.retry is not None
    assert task.retry.max_attempts == 7
    assert task.retry.backoff == Backoff(initial_s=0.5, multiplier=3, max_s=60, jitter=0)
    plain = decode(
        event(submit=events_pb2.SubmitTask(data=b"{}")), pipeline_id="p1", timestamp_ms=1
    )
    assert isinstance(plain, NewTask) and plain.retry is None


def test_a_retry_policy_out_of_bounds_is_quarantined_not_a_crash() -> None:
    bad = events_pb2.RetryPolicy(backoff=events_pb2.Backoff(initial_s=1, multiplier=0.1))
    raw = event(submit=events_pb2.SubmitTask(data=b"{}", retry=bad))
    result = decode(raw, pipeline_id="p1", timestamp_ms=1)
    assert isinstance(result, Undecodable) and "multiplier" in result.reason


def test_a_submit_carries_its_execution_timeout_and_a_bad_one_is_quarantined() -> None:
    timed = decode(
        event(submit=events_pb2.SubmitTask(data=b"{}", execution_timeout_s=2.5)),
        pipeline_id="p1",
        timestamp_ms=0,
    )
    assert isinstance(timed, NewTask) and timed.execution_timeout_s == 2.5
    plain = decode(
        event(submit=events_pb2.SubmitTask(data=b"{}")), pipeline_id="p1", timestamp_ms=0
    )
    assert isinstance(plain, NewTask) and plain.execution_timeout_s is None
    for bad in (-1.0, 1e9):
        got = decode(
            event(submit=events_pb2.SubmitTask(data=b"{}", execution_timeout_s=bad)),
            pipeline_id="p1",
            timestamp_ms=0,
        )
        assert isinstance(got, Undecodable) and "execution timeout" in got.reason


def test_purge_carries_its_cutoff() -> None:
    got = decode(
        event(purge=events_pb2.PurgeTask(finished_before_ms=1_700_000_000_000)),
        pipeline_id="p1",
        timestamp_ms=0,
    )
    assert isinstance(got, Purge) and got.task_id == "t1"
    assert got.finished_before.timestamp() == 1_700_000_000

"""The worker API's bounds and its failures, over a real gRPC server and an in-memory grain."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
import sqlalchemy as sa

from actors.errors import ActorUnavailable
from actors.pipeline.model import Grant, LeaseToken, Report, ReportAck, Verdict
from actors.pipeline.ports import StoreUnavailable
from actors.runtime import GrainId
from protos.wsched.v1 import worker_pb2, worker_pb2_grpc
from services.scheduler.worker_api import Limits, LocalGrain, Unavailable, WorkerService

PIPELINE = str(uuid.uuid4())
TOKEN = "wst_test"
AUTH = (("authorization", f"Bearer {TOKEN}"),)
LIMITS = Limits()
#: What the worker must never see of an internal failure.
LEAKS = ("SELECT", "INSERT", "UPDATE", "Traceback", 'File "', "/srv/", "secret-value")


def sql_error() -> sa.exc.DBAPIError:
    """A failure as the store raises it: its text quotes the statement and its values."""
    return sa.exc.DataError(
        "INSERT INTO tasks (pipeline_id, id, worker) VALUES (%(a)s, %(b)s, %(c)s) "
        "ON DUPLICATE KEY UPDATE worker = VALUES(worker)",
        {"a": PIPELINE, "b": "task-1", "c": "secret-value"},
        Exception("(1406, \"Data too long for column 'worker'\") at /srv/wsched/store.py"),
    )


@dataclass(kw_only=True)
class FakeGrain:
    lease_timeout_s: float = 30.0
    calls: list[tuple[str, Any]] = field(default_factory=list)
    failure: BaseException | None = None

    def _called(self, name: str, argument: Any) -> None:
        self.calls.append((name, argument))
        if self.failure is not None:
            raise self.failure

    async def poll(
        self, *, worker: str, max_tasks: int, max_bytes: int, wait_s: float
    ) -> list[Grant]:
        self._called("poll", worker)
        return []

    async def heartbeat(self, tokens: Sequence[LeaseToken]) -> list[Verdict]:
        self._called("heartbeat", list(tokens))
        return [Verdict.OK for _ in tokens]

    async def report(self, reports: Sequence[Report]) -> list[ReportAck]:
        self._called("report", list(reports))
        return [ReportAck.ACCEPTED for _ in reports]


@dataclass(kw_only=True)
class FakeDirectory:
    grain: FakeGrain
    asked: list[str] = field(default_factory=list)
    #: Set to make token checks fail as a database outage does.
    down: bool = False

    async def authenticate(self, pipeline_id: str, token: str) -> bool:
        self.asked.append(pipeline_id)
        if self.down:
            raise StoreUnavailable("worker tokens cannot be read now")
        return pipeline_id == PIPELINE and token == TOKEN

    async def local(self, pipeline_id: str) -> LocalGrain | None:
        return self.grain

    async def owner_address(self, pipeline_id: str) -> str | None:
        return None


@dataclass(kw_only=True)
class Served:
    worker: worker_pb2_grpc.WorkerStub
    grain: FakeGrain
    directory: FakeDirectory


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    grain = FakeGrain()
    directory = FakeDirectory(grain=grain)
    server = grpc.aio.server()
    service = WorkerService(directory=directory, address="here", limits=LIMITS)
    worker_pb2_grpc.add_WorkerServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield Served(
                worker=worker_pb2_grpc.WorkerStub(channel), grain=grain, directory=directory
            )
    finally:
        await server.stop(None)


def token(n: int = 1) -> str:
    return LeaseToken(task_id=f"task-{n}", attempt=1, epoch=1).encode()


def poll(*, worker: str = "w1", pipeline_id: str = PIPELINE) -> worker_pb2.PollRequest:
    return worker_pb2.PollRequest(pipeline_id=pipeline_id, worker=worker, wait_ms=0)


def heartbeat(
    *, worker: str = "w1", pipeline_id: str = PIPELINE, tokens: Sequence[str] = ("1.1.t",)
) -> worker_pb2.HeartbeatRequest:
    return worker_pb2.HeartbeatRequest(
        pipeline_id=pipeline_id, worker=worker, lease_tokens=list(tokens)
    )


def result(lease_token: str, **fields: Any) -> worker_pb2.TaskResult:
    return worker_pb2.TaskResult(
        lease_token=lease_token, outcome=worker_pb2.OUTCOME_SUCCEEDED, **fields
    )


def report(
    *, worker: str = "w1", pipeline_id: str = PIPELINE, tokens: Sequence[str] = ("1.1.t",)
) -> worker_pb2.ReportRequest:
    return worker_pb2.ReportRequest(
        pipeline_id=pipeline_id, worker=worker, results=[result(t) for t in tokens]
    )


Call = Callable[[worker_pb2_grpc.WorkerStub], Awaitable[Any]]
LONG_TOKEN = "1.1." + "t" * (LIMITS.max_lease_token_chars - 3)
MANY_TOKENS = [token(n) for n in range(LIMITS.max_heartbeat_tokens + 1)]

#: (what is sent, the field the refusal must name, the bound it must state)
OVER_THE_BOUNDS: dict[str, tuple[Call, str, int]] = {
    "poll 100,000-char worker": (
        lambda w: w.Poll(poll(worker="w" * 100_000), metadata=AUTH),
        "worker",
        LIMITS.max_worker_chars,
    ),
    "poll worker one over": (
        lambda w: w.Poll(poll(worker="w" * (LIMITS.max_worker_chars + 1)), metadata=AUTH),
        "worker",
        LIMITS.max_worker_chars,
    ),
    "poll pipeline_id": (
        lambda w: w.Poll(poll(pipeline_id=PIPELINE + "x"), metadata=AUTH),
        "pipeline_id",
        LIMITS.max_pipeline_id_chars,
    ),
    "heartbeat worker": (
        lambda w: w.Heartbeat(heartbeat(worker="w" * 100_000), metadata=AUTH),
        "worker",
        LIMITS.max_worker_chars,
    ),
    "heartbeat pipeline_id": (
        lambda w: w.Heartbeat(heartbeat(pipeline_id="p" * 100_000), metadata=AUTH),
        "pipeline_id",
        LIMITS.max_pipeline_id_chars,
    ),
    "heartbeat token count": (
        lambda w: w.Heartbeat(heartbeat(tokens=MANY_TOKENS), metadata=AUTH),
        "lease_tokens",
        LIMITS.max_heartbeat_tokens,
    ),
    "heartbeat token length": (
        lambda w: w.Heartbeat(heartbeat(tokens=["1.1.t", LONG_TOKEN]), metadata=AUTH),
        "lease_tokens[1]",
        LIMITS.max_lease_token_chars,
    ),
    "heartbeat 5000-digit epoch": (
        lambda w: w.Heartbeat(heartbeat(tokens=["9" * 5000 + ".1.t"]), metadata=AUTH),
        "lease_tokens[0]",
        LIMITS.max_lease_token_chars,
    ),
    "report worker": (
        lambda w: w.Report(report(worker="w" * 100_000), metadata=AUTH),
        "worker",
        LIMITS.max_worker_chars,
    ),
    "report pipeline_id": (
        lambda w: w.Report(report(pipeline_id="p" * 37), metadata=AUTH),
        "pipeline_id",
        LIMITS.max_pipeline_id_chars,
    ),
    "report result count": (
        lambda w: w.Report(
            report(tokens=[token(n) for n in range(LIMITS.max_report_results + 1)]),
            metadata=AUTH,
        ),
        "results",
        LIMITS.max_report_results,
    ),
    "report token length": (
        lambda w: w.Report(report(tokens=[LONG_TOKEN]), metadata=AUTH),
        "results[0].lease_token",
        LIMITS.max_lease_token_chars,
    ),
}


@pytest.mark.parametrize("case", list(OVER_THE_BOUNDS))
async def test_a_field_over_its_bound_is_invalid_argument_before_the_grain(
    served: Served, case: str
) -> None:
    call, name, bound = OVER_THE_BOUNDS[case]
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call(served.worker)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = refused.value.details() or ""
    assert details.startswith(f"{name} ") and f"the limit is {bound}" in details, details
    assert served.grain.calls == [] and served.directory.asked == []


async def test_fields_at_their_bounds_pass(served: Served) -> None:
    worker = "w" * LIMITS.max_worker_chars
    at_most = "1.1." + "t" * (LIMITS.max_lease_token_chars - 4)
    await served.worker.Poll(poll(worker=worker), metadata=AUTH)
    beat = await served.worker.Heartbeat(
        heartbeat(worker=worker, tokens=[*MANY_TOKENS[:-2], at_most]), metadata=AUTH
    )
    reported = await served.worker.Report(
        report(worker=worker, tokens=[token(n) for n in range(LIMITS.max_report_results)]),
        metadata=AUTH,
    )
    assert len(beat.verdicts) == LIMITS.max_heartbeat_tokens
    assert len(reported.acks) == LIMITS.max_report_results
    assert [name for name, _ in served.grain.calls] == ["poll", "heartbeat", "report"]
    assert served.grain.calls[0] == ("poll", worker)


async def test_a_long_error_is_cut_to_its_tail_and_a_large_result_is_rejected_alone(
    served: Served,
) -> None:
    error = "x" * 100_000 + "the cause"
    large = b"r" * (LIMITS.max_result_bytes + 1)
    request = worker_pb2.ReportRequest(
        pipeline_id=PIPELINE,
        results=[
            worker_pb2.TaskResult(
                lease_token=token(1), outcome=worker_pb2.OUTCOME_FAILED, error=error
            ),
            result(token(2), result=large),
        ],
    )
    answer = await served.worker.Report(request, metadata=AUTH)
    assert [ack.ack for ack in answer.acks] == [worker_pb2.ACK_ACCEPTED, worker_pb2.ACK_REJECTED]
    assert str(LIMITS.max_result_bytes) in answer.acks[1].detail
    ((_, (stored,)),) = served.grain.calls
    assert len(stored.error) == LIMITS.max_error_chars and stored.error.endswith("the cause")


def assert_no_leak(details: str) -> str:
    """The details hold nothing of the failure's text; returns its incident id."""
    for leak in LEAKS:
        assert leak not in details, details
    incident = re.search(r"incident ([0-9a-f]{16})", details)
    assert incident is not None, details
    return incident.group(1)


@pytest.mark.parametrize(
    "call",
    [
        lambda w: w.Poll(poll(), metadata=AUTH),
        lambda w: w.Heartbeat(heartbeat(tokens=[token()]), metadata=AUTH),
        lambda w: w.Report(report(tokens=[token()]), metadata=AUTH),
    ],
    ids=["Poll", "Heartbeat", "Report"],
)
async def test_an_internal_error_answers_an_incident_id_and_no_sql(
    served: Served, caplog: pytest.LogCaptureFixture, call: Call
) -> None:
    failure = sql_error()
    served.grain.failure = failure
    with caplog.at_level(logging.ERROR), pytest.raises(grpc.aio.AioRpcError) as failed:
        await call(served.worker)
    assert failed.value.code() == grpc.StatusCode.INTERNAL
    incident = assert_no_leak(failed.value.details() or "")
    (logged,) = [r for r in caplog.records if incident in r.getMessage()]
    assert logged.exc_info is not None and logged.exc_info[1] is failure


async def test_an_unavailable_grain_answers_without_the_error_it_quotes(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    # A grain quarantined after failing flushes quotes its last error, a path included.
    quarantined = ActorUnavailable(
        grain=GrainId(kind="pipeline", key=f"{PIPELINE}/0"),
        retry_after_s=5,
        last_error=sql_error(),
    )
    served.grain.failure = Unavailable(str(quarantined))
    with caplog.at_level(logging.INFO), pytest.raises(grpc.aio.AioRpcError) as failed:
        await served.worker.Poll(poll(), metadata=AUTH)
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    incident = assert_no_leak(failed.value.details() or "")
    (logged,) = [r for r in caplog.records if incident in r.getMessage()]
    assert "Data too long for column" in logged.getMessage()


async def test_a_token_check_during_a_database_outage_is_unavailable_not_internal(
    served: Served,
) -> None:
    served.directory.down = True
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await served.worker.Poll(poll(), metadata=AUTH)
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE  # workers retry this one
    assert_no_leak(failed.value.details() or "")


async def test_a_non_retryable_failure_reaches_the_grain_as_such(served: Served) -> None:
    final = worker_pb2.TaskResult(
        lease_token=token(1), outcome=worker_pb2.OUTCOME_FAILED, error="bad", non_retryable=True
    )
    plain = worker_pb2.TaskResult(lease_token=token(2), outcome=worker_pb2.OUTCOME_FAILED)
    request = worker_pb2.ReportRequest(pipeline_id=PIPELINE, worker="w1", results=[final, plain])
    await served.worker.Report(request, metadata=AUTH)
    ((name, reports),) = served.grain.calls
    assert name == "report"
    assert [(r.token.task_id, r.non_retryable) for r in reports] == [
        ("task-1", True),
        ("task-2", False),
    ]

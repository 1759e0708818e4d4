"""Traces on the real path: a task submitted through the API's traced producer to real
Kafka, admitted and dispatched by a scheduler replica on real TiDB, run by a real agent
process and reported. An OTLP/gRPC receiver in the test stands in for the collector and
keeps what each process exports; the test checks one trace per task and its links."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import grpc
import pytest
import sqlalchemy as sa
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

from services.api.tracing import TracedProducer
from services.kafka.producer import KafkaProducer, OutgoingTask
from services.observability import setup_tracing
from services.placement import Route
from services.scheduler.host import SchedulerHost
from services.store.schema import tasks
from tests.integration.scheduler.conftest import ReadyPipeline
from tests.integration.worker.conftest import Launcher, scheduler_settings, wait_finished

pytestmark = pytest.mark.integration

#: Fails its first attempt, succeeds on the second: two attempt spans in one trace.
FAIL_FIRST = {
    "pipeline": [
        {
            "executor": "sh",
            "commands": ['if [ "$WSCHED_TASK_ATTEMPT" = 1 ]; then exit 3; fi; echo {{message}}'],
        }
    ]
}


@dataclass(frozen=True, kw_only=True)
class Received:
    service: str
    span: trace_pb2.Span


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """The OTLP trace service, keeping every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[Received] = []

    async def Export(
        self,
        request: trace_service_pb2.ExportTraceServiceRequest,
        context: grpc.aio.ServicerContext,
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        for resource_spans in request.resource_spans:
            service = next(
                a.value.string_value
                for a in resource_spans.resource.attributes
                if a.key == "service.name"
            )
            for scope in resource_spans.scope_spans:
                self.spans.extend(Received(service=service, span=s) for s in scope.spans)
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture
async def collector() -> AsyncIterator[tuple[str, Collector]]:
    server = grpc.aio.server()
    keeper = Collector()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(  # type: ignore[no-untyped-call]
        keeper, server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"http://127.0.0.1:{port}", keeper
    finally:
        await server.stop(grace=None)


@pytest.fixture
async def scheduler(
    kafka_bootstrap: str,
    tidb_url: str,
    kafka_group: str,
    engine: sa.Engine,
    collector: tuple[str, Collector],
) -> AsyncIterator[SchedulerHost]:
    """The worker tests' scheduler replica, exporting its spans to the collector."""
    settings = scheduler_settings(
        kafka_bootstrap, tidb_url, kafka_group, otlp_endpoint=collector[0]
    )
    async with SchedulerHost(settings=settings, rescan_s=1) as host:
        yield host


@pytest.fixture
def bsp_delay(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # The batch span processors (here and in the agent) export every 0.2 s, not 5 s.
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "200")
    yield


def _spans(keeper: Collector, name: str) -> list[Received]:
    return [r for r in keeper.spans if r.span.name == name]


def _child_of(child: trace_pb2.Span, parent: trace_pb2.Span) -> bool:
    return child.trace_id == parent.trace_id and child.parent_span_id == parent.span_id


async def _wait_for(keeper: Collector, counts: dict[str, int], timeout_s: float = 60) -> None:
    try:
        async with asyncio.timeout(timeout_s):
            while any(len(_spans(keeper, n)) < c for n, c in counts.items()):
                await asyncio.sleep(0.2)
    except TimeoutError:
        got = {n: len(_spans(keeper, n)) for n in counts}
        raise AssertionError(f"spans expected {counts}, received {got}") from None


async def test_one_trace_per_task_across_api_scheduler_and_worker(
    bsp_delay: None,
    collector: tuple[str, Collector],
    launcher: Launcher,
    pipeline: ReadyPipeline,
    engine: sa.Engine,
    kafka_bootstrap: str,
) -> None:
    endpoint, keeper = collector
    # A traced agent logging JSON; its span processor exports every 0.2 s.
    traced = {
        "WSCHED_WORKER_OTLP_ENDPOINT": endpoint,
        "WSCHED_WORKER_LOG_FORMAT": "json",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }
    executors = {"sh": await launcher.executor("sh")}
    launcher.agent(
        name="w1", pipeline=pipeline, definition=FAIL_FIRST, executors=executors, **traced
    )
    api = setup_tracing(service="wsched-api", endpoint=endpoint)
    ids = ["t-a", "t-b"]
    async with KafkaProducer(bootstrap=kafka_bootstrap) as kafka:
        await TracedProducer(kafka, tracing=api).submit(
            Route(pipeline.id),
            [OutgoingTask(id=i, data=b'{"message": "hi"}', data_sha256=b"x" * 32) for i in ids],
        )
    await asyncio.to_thread(api.shutdown)  # exports to the collector on this loop
    rows = await wait_finished(engine, pipeline.id, set(ids), launcher)
    assert {r.status for r in rows.values()} == {"succeeded"}, launcher.logs()
    assert {r.attempt for r in rows.values()} == {2}
    await _wait_for(
        keeper,
        {
            "wsched.submit": 2,
            "wsched.admit": 2,
            "wsched.dispatch": 4,
            "wsched.attempt": 4,
            "wsched.report": 4,
        },
    )
    with engine.connect() as conn:
        stored = dict(
            conn.execute(
                sa.select(tasks.c.id, tasks.c.trace_parent).where(
                    tasks.c.pipeline_id == pipeline.id
                )
            ).all()
        )
    for submit in _spans(keeper, "wsched.submit"):
        _check_trace(keeper, submit, stored)
    _check_logs(keeper, launcher, pipeline.id)


def _check_logs(keeper: Collector, launcher: Launcher, pipeline_id: str) -> None:
    """The agent's JSON lines about an attempt carry its task, pipeline and trace ids."""
    [agent] = [p for p in launcher.procs if p.name == "agent-w1"]
    lines = [json.loads(line) for line in agent.log().splitlines() if line.startswith("{")]
    failed = [line for line in lines if "attempt 1 failed" in line["message"]]
    assert len(failed) == 2, agent.log()
    attempts = {
        (_attribute(r.span, "wsched.task_id"), r.span.trace_id.hex(), r.span.span_id.hex())
        for r in _spans(keeper, "wsched.attempt")
    }
    for line in failed:
        assert line["pipeline_id"] == pipeline_id
        assert (line["task_id"], line["trace_id"], line["span_id"]) in attempts


def _attribute(span: trace_pb2.Span, key: str) -> str | int:
    value = next(a.value for a in span.attributes if a.key == key)
    return value.string_value or value.int_value


def _check_trace(keeper: Collector, submit: Received, stored: dict[str, str]) -> None:
    """Every span of the task is in the submit's trace, each hop the child of the last."""
    task_id = _attribute(submit.span, "wsched.task_id")
    trace = [r for r in keeper.spans if r.span.trace_id == submit.span.trace_id]
    assert {r.service for r in trace} == {"wsched-api", "wsched-scheduler", "wsched-worker"}
    assert {
        _attribute(r.span, "wsched.task_id") for r in trace if r.span.name != "wsched.report"
    } == {task_id}
    # the context stored with the task is the submit span's
    context = f"00-{submit.span.trace_id.hex()}-{submit.span.span_id.hex()}-"
    assert stored[str(task_id)].startswith(context)  # then the flags: sampled
    named = {
        n: [r.span for r in trace if r.span.name == n]
        for n in ("wsched.admit", "wsched.dispatch", "wsched.attempt", "wsched.report")
    }
    [admit] = named["wsched.admit"]
    assert _child_of(admit, submit.span)
    dispatches = sorted(named["wsched.dispatch"], key=lambda s: _attribute(s, "wsched.attempt"))
    assert [_attribute(d, "wsched.attempt") for d in dispatches] == [1, 2]
    assert all(_child_of(d, submit.span) for d in dispatches)
    for dispatch in dispatches:
        [attempt] = [a for a in named["wsched.attempt"] if _child_of(a, dispatch)]
        assert _attribute(attempt, "wsched.attempt") == _attribute(dispatch, "wsched.attempt")
        [report] = [r for r in named["wsched.report"] if _child_of(r, attempt)]
        assert _attribute(report, "wsched.ack") == "ACK_ACCEPTED"
    # each attempt ran its one step in a span of its own, named by the task and attempt
    steps = [r.span for r in trace if r.span.name == "wsched.step"]
    for attempt in named["wsched.attempt"]:
        [step] = [s for s in steps if _child_of(s, attempt)]
        assert _attribute(step, "wsched.attempt") == _attribute(attempt, "wsched.attempt")
    outcomes = sorted(str(_attribute(a, "wsched.outcome")) for a in named["wsched.attempt"])
    assert outcomes == ["failed", "succeeded"]

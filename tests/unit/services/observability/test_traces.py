"""One trace per task, in memory: submit -> record -> admission -> dispatch -> attempt ->
report, each span the child of the one before it across the process boundaries (the
record, the task's stored context, the leased task). And nothing at all when off."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from actors.pipeline.model import AdmitBatch, AdmitResult, Grant, LeaseToken, Status, Task
from protos.wsched.v1 import worker_pb2
from services.api.tracing import TracedProducer
from services.kafka.consumer import ConsumedRecord
from services.kafka.producer import (
    BrokerUnavailable,
    MemoryProducer,
    OutgoingTask,
    submit_records,
)
from services.observability import Tracing, setup_tracing, traceparent_of, valid_traceparent
from services.placement import Route
from services.scheduler.forwarder import build_batch
from services.scheduler.tracing import mark_dispatched, traced_admit
from services.scheduler.worker_api import _leased
from services.worker.runner import Outcome, TaskOutcome
from services.worker.tracing import AttemptSpans

PIPELINE = "p-1"
ROUTE = Route(PIPELINE)
NOW = dt.datetime(2026, 11, 26, tzinfo=dt.UTC)


def _tracing(exporter: InMemorySpanExporter, service: str) -> Tracing:
    return setup_tracing(service=service, endpoint=None, processors=[SimpleSpanProcessor(exporter)])


def _task(task_id: str) -> OutgoingTask:
    return OutgoingTask(id=task_id, data=b"{}", data_sha256=b"x" * 32)


def _consumed(producer: MemoryProducer) -> dict[int, list[ConsumedRecord]]:
    """The records as the forwarder reads them, headers included."""
    return {
        0: [
            ConsumedRecord(
                partition=0,
                offset=i,
                value=r.value,
                timestamp_ms=0,
                trace_parent=dict(r.headers).get("traceparent"),
            )
            for i, r in enumerate(producer.records)
        ]
    }


def _grant(task_id: str, attempt: int, trace_parent: str | None) -> Grant:
    task = Task(
        id=task_id,
        attempt=attempt,
        status=Status.LEASED,
        data=b"{}",
        due_at=NOW,
        created_at=NOW,
        trace_parent=trace_parent,
    )
    return Grant(token=LeaseToken(task_id=task_id, attempt=attempt, epoch=1), task=task)


def _by_name(spans: Sequence[ReadableSpan]) -> dict[str, list[ReadableSpan]]:
    named: dict[str, list[ReadableSpan]] = {}
    for span in spans:
        named.setdefault(span.name, []).append(span)
    return named


def _child_of(child: ReadableSpan, parent: ReadableSpan) -> bool:
    assert child.parent is not None and parent.context is not None
    return (child.parent.trace_id, child.parent.span_id) == (
        parent.context.trace_id,
        parent.context.span_id,
    )


async def test_one_trace_per_task_through_every_hop() -> None:
    exporter = InMemorySpanExporter()
    api, scheduler, worker = (_tracing(exporter, s) for s in ("api", "scheduler", "worker"))
    # API: one submit span per task, its context in the record's header and event
    memory = MemoryProducer()
    await TracedProducer(memory, tracing=api).submit(ROUTE, [_task("a"), _task("b")])
    headers = [dict(r.headers)["traceparent"].decode() for r in memory.records]
    events = memory.task_events(PIPELINE)
    assert [e.submit.trace_parent for e in events] == headers
    # scheduler: the forwarder's batch carries it to the grain, which stores it
    batch = build_batch(PIPELINE, _consumed(memory)).batch
    assert [t.trace_parent for t in batch.new] == headers

    async def admit(batch: AdmitBatch) -> AdmitResult:
        return AdmitResult(
            admitted=len(batch.new), duplicates=0, conflicts=0, cancelled=0, requeued=0
        )

    await traced_admit(admit, tracing=scheduler, pipeline_id=PIPELINE)(batch)
    # two attempts of task a, as paged back from the store (its stored context)
    grants = [_grant("a", 1, headers[0]), _grant("a", 2, headers[0])]
    leased = [_leased(g) for g in grants]
    mark_dispatched(scheduler, pipeline_id=PIPELINE, worker="w1", grants=grants, leased=leased)
    # worker: each attempt a span under its dispatch, then its report
    spans = AttemptSpans(tracing=worker, pipeline_id=PIPELINE, worker="w1")
    for task, outcome in zip(leased, (Outcome.FAILED, Outcome.SUCCEEDED), strict=True):
        spans.start(task)
        with spans.running(task.lease_token):
            pass
        spans.finished(task.lease_token, TaskOutcome(outcome=outcome, error="boom"))
        spans.acknowledged(task.lease_token, worker_pb2.ACK_ACCEPTED)

    named = _by_name(exporter.get_finished_spans())
    submit_a, submit_b = named["wsched.submit"]
    assert submit_a.context is not None and submit_b.context is not None
    assert submit_a.context.trace_id != submit_b.context.trace_id  # a trace per task
    assert submit_a.parent is None
    assert [
        _child_of(s, p) for s, p in zip(named["wsched.admit"], (submit_a, submit_b), strict=True)
    ] == [True, True]
    dispatches, attempts, reports = (
        named[n] for n in ("wsched.dispatch", "wsched.attempt", "wsched.report")
    )
    assert all(_child_of(d, submit_a) for d in dispatches)
    assert [_child_of(a, d) for a, d in zip(attempts, dispatches, strict=True)] == [True, True]
    assert [_child_of(r, a) for r, a in zip(reports, attempts, strict=True)] == [True, True]
    assert [a.attributes["wsched.attempt"] for a in attempts] == [1, 2]  # type: ignore[index]
    assert [a.status.status_code for a in attempts] == [StatusCode.ERROR, StatusCode.UNSET]
    assert {s.resource.attributes["service.name"] for s in exporter.get_finished_spans()} == {
        "api",
        "scheduler",
        "worker",
    }


async def test_a_failed_produce_marks_the_submit_spans() -> None:
    exporter = InMemorySpanExporter()
    memory = MemoryProducer()
    memory.fail = "no broker"
    with pytest.raises(BrokerUnavailable):
        await TracedProducer(memory, tracing=_tracing(exporter, "api")).submit(ROUTE, [_task("a")])
    [span] = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR


def test_a_task_without_context_gets_no_dispatch_or_attempt_span() -> None:
    exporter = InMemorySpanExporter()
    tracing = _tracing(exporter, "scheduler")
    grants = [_grant("a", 1, None)]
    leased = [_leased(g) for g in grants]
    mark_dispatched(tracing, pipeline_id=PIPELINE, worker="w", grants=grants, leased=leased)
    spans = AttemptSpans(tracing=tracing, pipeline_id=PIPELINE, worker="w")
    spans.start(leased[0])
    spans.finished(leased[0].lease_token, TaskOutcome(outcome=Outcome.SUCCEEDED))
    assert leased[0].trace_parent == "" and exporter.get_finished_spans() == ()


def test_only_well_formed_contexts_are_kept() -> None:
    tracing = _tracing(InMemorySpanExporter(), "x")
    with tracing.require().start_as_current_span("s") as span:
        good = traceparent_of(span)
    assert good is not None and valid_traceparent(good) == good
    assert valid_traceparent(good.encode()) == good
    for bad in (None, "", "garbage", good + "-extra", "x" * 500, b"\xff" * 55):
        assert valid_traceparent(bad) is None


def test_the_header_stands_in_for_an_event_without_a_context() -> None:
    [record] = submit_records(ROUTE, [_task("a")], now_ms=0)
    assert record.headers == ()  # not traced: no header, no field
    header = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    consumed = ConsumedRecord(
        partition=0, offset=0, value=record.value, timestamp_ms=0, trace_parent=header
    )
    [task] = build_batch(PIPELINE, {0: [consumed]}).batch.new
    assert task.trace_parent == header.decode()


def test_off_means_no_tracer_at_all() -> None:
    off = setup_tracing(service="x", endpoint=None)
    assert not off.enabled and off.provider is None
    with pytest.raises(RuntimeError, match="tracing is off"):
        off.require()
    off.shutdown()  # nothing to flush, no error

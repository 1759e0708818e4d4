"""The API's server spans, in memory: one per request, named by the route template, the
parent of a single task's submit span; a batch's tasks each in a trace of their own,
linked to the request. With tracing off the app is not instrumented at all."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from services.observability import setup_tracing
from tests.unit.services.api.conftest import LIMITS, Fakes
from tests.unit.services.api.harness import Api, bearer, running_api, settings_for

SUBMIT = "/api/applications/a/pipelines/p"
SUBMIT_ROUTE = "/api/applications/{app}/pipelines/{pipeline}"


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
async def traced(
    migrated_sqlite: str, fakes: Fakes, exporter: InMemorySpanExporter
) -> AsyncIterator[Api]:
    tracing = setup_tracing(
        service="wsched-api", endpoint=None, processors=[SimpleSpanProcessor(exporter)]
    )
    async with running_api(
        settings_for(migrated_sqlite),
        limits=LIMITS,
        producer=fakes.producer,
        admin=fakes.admin,
        deployer=fakes.deployer,
        tracing=tracing,
    ) as running:
        yield running
    tracing.shutdown()


def _server_spans(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]


def _one_named(spans: Sequence[ReadableSpan], name: str) -> ReadableSpan:
    [span] = [s for s in spans if s.name == name]
    return span


def _status_code(span: ReadableSpan) -> object:
    # The instrumentation writes the stable name, or the old one until its migration ends.
    attributes = span.attributes or {}
    return attributes.get("http.response.status_code", attributes.get("http.status_code"))


async def test_a_submit_is_the_child_of_its_request_span(
    traced: Api, exporter: InMemorySpanExporter
) -> None:
    key, _ = await traced.ready_pipeline()
    exporter.clear()
    answer = await traced.client.post(SUBMIT, json={"n": 1}, headers=bearer(key))
    assert answer.status_code == 202, answer.text

    spans = exporter.get_finished_spans()
    request = _one_named(spans, f"POST {SUBMIT_ROUTE}")
    submit = _one_named(spans, "wsched.submit")
    assert request.kind is SpanKind.SERVER and request.parent is None
    assert request.attributes is not None
    assert request.attributes["http.route"] == SUBMIT_ROUTE  # the template, not the path
    assert _status_code(request) == 202
    assert request.status.status_code is StatusCode.UNSET
    assert request.context is not None and submit.parent is not None
    assert submit.parent.span_id == request.context.span_id
    assert submit.context is not None and submit.context.trace_id == request.context.trace_id
    assert submit.attributes is not None
    assert submit.attributes["wsched.task_id"] == answer.json()["id"]
    # Only the request's span and the submit's: no spans per chunk received or sent.
    assert len(spans) == 2, [s.name for s in spans]


async def test_a_callers_traceparent_is_continued(
    traced: Api, exporter: InMemorySpanExporter
) -> None:
    key, _ = await traced.ready_pipeline()
    exporter.clear()
    caller = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    headers = {**bearer(key), "traceparent": caller}
    answer = await traced.client.post(SUBMIT, json={"n": 1}, headers=headers)
    assert answer.status_code == 202, answer.text
    request = _one_named(exporter.get_finished_spans(), f"POST {SUBMIT_ROUTE}")
    assert request.parent is not None and request.parent.is_remote
    assert format(request.parent.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"
    assert format(request.parent.span_id, "016x") == "b7ad6b7169203331"


async def test_a_batch_gives_each_task_its_own_trace_linked_to_the_request(
    traced: Api, exporter: InMemorySpanExporter
) -> None:
    key, _ = await traced.ready_pipeline()
    exporter.clear()
    items = [{"data": {"n": n}} for n in range(3)]
    answer = await traced.client.post(f"{SUBMIT}/tasks", json={"tasks": items}, headers=bearer(key))
    assert answer.status_code == 202, answer.text

    spans = exporter.get_finished_spans()
    request = _one_named(spans, f"POST {SUBMIT_ROUTE}/tasks")
    submits = [s for s in spans if s.name == "wsched.submit"]
    assert len(submits) == 3
    assert request.context is not None
    traces = {s.context.trace_id for s in submits if s.context is not None}
    assert len(traces) == 3 and request.context.trace_id not in traces
    for submit in submits:
        assert submit.parent is None
        [link] = submit.links
        assert link.context.span_id == request.context.span_id


async def test_a_refused_request_records_its_status_and_route(
    traced: Api, exporter: InMemorySpanExporter
) -> None:
    key, _ = await traced.ready_pipeline()
    exporter.clear()
    answer = await traced.client.post(
        "/api/applications/a/pipelines/nope", json={}, headers=bearer(key)
    )
    assert answer.status_code == 404, answer.text
    unknown = await traced.client.get("/no/such/path", headers=bearer(key))
    assert unknown.status_code == 404, unknown.text

    refused, unmatched = _server_spans(exporter)
    assert refused.name == f"POST {SUBMIT_ROUTE}" and _status_code(refused) == 404
    # A 4xx is the client's error, not the server's (OpenTelemetry's HTTP conventions).
    assert refused.status.status_code is StatusCode.UNSET
    assert unmatched.name == "GET" and _status_code(unmatched) == 404
    assert "http.route" not in (unmatched.attributes or {})
    assert not [s for s in exporter.get_finished_spans() if s.name == "wsched.submit"]


async def test_probes_and_scrapes_get_no_span(traced: Api, exporter: InMemorySpanExporter) -> None:
    for path in ("/healthz", "/metrics"):
        answer = await traced.client.get(path)
        assert answer.status_code == 200, answer.text
    assert exporter.get_finished_spans() == ()


async def test_off_the_app_is_not_instrumented_and_makes_no_span(api: Api, fakes: Fakes) -> None:
    key, pipeline = await api.ready_pipeline()
    answer = await api.client.post(SUBMIT, json={"n": 1}, headers=bearer(key))
    assert answer.status_code == 202, answer.text
    assert not getattr(api.app, "_is_instrumented_by_opentelemetry", False)
    assert fakes.producer.task_events(pipeline["id"])[0].submit.trace_parent == ""
    assert api.ctx.producer is fakes.producer  # not wrapped either

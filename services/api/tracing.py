"""The API's spans: a server span per request, and a ``wsched.submit`` span per task.

Every request gets an HTTP server span (:func:`trace_requests`: the maintained
OpenTelemetry FastAPI instrumentation, named by method and route template). A request
that submits one task is the root of that task's trace: its ``wsched.submit`` is the
request span's child. A batch does not make one trace of all its tasks (ten thousand
tasks would be one trace, too large for any trace store to show and sampled as one):
each of its tasks starts a trace of its own, linked to the request's span. The submit
span lasts until the broker acknowledged the record, and its ``traceparent`` rides in
the record (header and event) to be stored with the task. Neither is installed when
tracing is off.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.trace import Link, SpanKind

from protos.wsched.v1 import events_pb2
from services.kafka.producer import EventProducer, OutgoingTask
from services.observability import Tracing, ending, traceparent_of
from services.placement import Route

#: Probes and scrapes (every few seconds, never about a task) get no span: full URLs,
#: comma-separated regular expressions.
_UNTRACED = r"^[a-z]+://[^/]+/(healthz|readyz|metrics)$"


def trace_requests(app: FastAPI, *, tracing: Tracing) -> None:
    """A server span around every request of ``app``: only called with tracing on."""
    # Imported here: a process that does not trace never loads the instrumentation.
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=tracing.provider,
        # The API's metrics are Prometheus' (services/api/metrics.py), not OpenTelemetry's.
        meter_provider=NoOpMeterProvider(),
        excluded_urls=_UNTRACED,
        # One span per request: not one more per chunk of the body received or sent.
        exclude_spans=["receive", "send"],
    )


def _submit_parent(count: int) -> tuple[Context | None, list[Link]]:
    """Where the submit spans of ``count`` tasks start: under the request's span for a
    single task, else each in a new trace linked to it."""
    request = trace.get_current_span().get_span_context()
    if count == 1:
        return None, []  # the current context: the request's span, if any
    return Context(), [Link(request)] if request.is_valid else []


class TracedProducer:
    """An :class:`EventProducer` that traces submits and passes everything else on."""

    def __init__(self, inner: EventProducer, *, tracing: Tracing) -> None:
        self._inner = inner
        self._tracer = tracing.require()

    async def submit(self, route: Route, tasks: Sequence[OutgoingTask]) -> None:
        context, links = _submit_parent(len(tasks))
        spans = [
            self._tracer.start_span(
                "wsched.submit",
                context=context,
                links=links,
                kind=SpanKind.PRODUCER,
                attributes={
                    "wsched.pipeline_id": route.pipeline_id,
                    "wsched.task_id": task.id,
                    "messaging.system": "kafka",
                    "messaging.destination.name": route.topic,
                },
            )
            for task in tasks
        ]
        traced = [
            dataclasses.replace(task, trace_parent=traceparent_of(span))
            for task, span in zip(tasks, spans, strict=True)
        ]
        with ending(spans):
            await self._inner.submit(route, traced)

    async def cancel(self, route: Route, task_id: str, *, reason: str = "") -> None:
        await self._inner.cancel(route, task_id, reason=reason)

    async def requeue(self, route: Route, task_id: str) -> None:
        await self._inner.requeue(route, task_id)

    async def schedule_changed(self, route: Route, schedule_id: str, version: int) -> None:
        await self._inner.schedule_changed(route, schedule_id, version)

    async def purge(self, route: Route, task_id: str, *, finished_before_ms: int) -> None:
        await self._inner.purge(route, task_id, finished_before_ms=finished_before_ms)

    async def placement(
        self, pipeline_id: str, shard: int, kind: events_pb2.PlacementEvent.Kind.ValueType
    ) -> None:
        await self._inner.placement(pipeline_id, shard, kind)

"""The root of a task's trace: a ``wsched.submit`` span per task the API produces.

Each task gets a trace of its own (one per task, not one per request: a batch of ten
thousand tasks is ten thousand traces, each followed on its own through admission,
dispatch and its attempts). The span lasts until the broker acknowledged the record, and
its ``traceparent`` rides in the record (header and event) to be stored with the task.
The API wraps its producer in :class:`TracedProducer` only when tracing is on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from opentelemetry.context import Context
from opentelemetry.trace import SpanKind

from protos.wsched.v1 import events_pb2
from services.kafka.producer import EventProducer, OutgoingTask
from services.observability import Tracing, ending, traceparent_of
from services.placement import pipeline_topic


class TracedProducer:
    """An :class:`EventProducer` that traces submits and passes everything else on."""

    def __init__(self, inner: EventProducer, *, tracing: Tracing) -> None:
        self._inner = inner
        self._tracer = tracing.require()

    async def submit(self, pipeline_id: str, tasks: Sequence[OutgoingTask]) -> None:
        topic = pipeline_topic(pipeline_id)
        spans = [
            self._tracer.start_span(
                "wsched.submit",
                context=Context(),  # a new trace per task, whatever the caller's context
                kind=SpanKind.PRODUCER,
                attributes={
                    "wsched.pipeline_id": pipeline_id,
                    "wsched.task_id": task.id,
                    "messaging.system": "kafka",
                    "messaging.destination.name": topic,
                },
            )
            for task in tasks
        ]
        traced = [
            dataclasses.replace(task, trace_parent=traceparent_of(span))
            for task, span in zip(tasks, spans, strict=True)
        ]
        with ending(spans):
            await self._inner.submit(pipeline_id, traced)

    async def cancel(self, pipeline_id: str, task_id: str, *, reason: str = "") -> None:
        await self._inner.cancel(pipeline_id, task_id, reason=reason)

    async def requeue(self, pipeline_id: str, task_id: str) -> None:
        await self._inner.requeue(pipeline_id, task_id)

    async def schedule_changed(self, pipeline_id: str, schedule_id: str, version: int) -> None:
        await self._inner.schedule_changed(pipeline_id, schedule_id, version)

    async def purge(self, pipeline_id: str, task_id: str, *, finished_before_ms: int) -> None:
        await self._inner.purge(pipeline_id, task_id, finished_before_ms=finished_before_ms)

    async def placement(
        self, pipeline_id: str, shard: int, kind: events_pb2.PlacementEvent.Kind.ValueType
    ) -> None:
        await self._inner.placement(pipeline_id, shard, kind)

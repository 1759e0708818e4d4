"""The scheduler's spans of a task's trace: its admission and each attempt's dispatch.

Both are children of the task's submit span, named by the ``traceparent`` the task
carries (from the record at admission, from its row or the window at dispatch). A task
without one (submitted while the API did not trace, or a schedule's run fired here)
gets no span. Nothing here runs when tracing is off: the host does not wrap admission
and the worker API skips :func:`mark_dispatched`.
"""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.trace import SpanKind

from actors.pipeline.model import AdmitBatch, AdmitResult, Grant
from protos.wsched.v1 import worker_pb2
from services.observability import Tracing, ending, parent_context, traceparent_of
from services.scheduler.forwarder import Admit

ATTR_PIPELINE = "wsched.pipeline_id"
ATTR_TASK = "wsched.task_id"
ATTR_ATTEMPT = "wsched.attempt"


def traced_admit(admit: Admit, *, tracing: Tracing, pipeline_id: str) -> Admit:
    """``admit`` with a ``wsched.admit`` span per traced task of each batch, from the
    batch reaching the grain to its fenced transaction's end."""
    tracer = tracing.require()

    async def admit_traced(batch: AdmitBatch) -> AdmitResult:
        spans = [
            tracer.start_span(
                "wsched.admit",
                context=parent_context(task.trace_parent),
                kind=SpanKind.CONSUMER,
                attributes={ATTR_PIPELINE: pipeline_id, ATTR_TASK: task.id},
            )
            for task in batch.new
            if task.trace_parent is not None
        ]
        # The forwarder retries a failed batch: each try is a span of its own.
        with ending(spans):
            return await admit(batch)

    return admit_traced


def mark_dispatched(
    tracing: Tracing,
    *,
    pipeline_id: str,
    worker: str,
    grants: Sequence[Grant],
    leased: Sequence[worker_pb2.LeasedTask],
) -> None:
    """A ``wsched.dispatch`` span per traced grant; its context goes to the worker in the
    leased task, so the worker's span of the attempt is its child."""
    tracer = tracing.require()
    for grant, task in zip(grants, leased, strict=True):
        if grant.task.trace_parent is None:
            continue
        span = tracer.start_span(
            "wsched.dispatch",
            context=parent_context(grant.task.trace_parent),
            kind=SpanKind.PRODUCER,
            attributes={
                ATTR_PIPELINE: pipeline_id,
                ATTR_TASK: grant.task.id,
                ATTR_ATTEMPT: grant.task.attempt,
                "wsched.worker": worker,
            },
        )
        task.trace_parent = traceparent_of(span) or ""
        span.end()

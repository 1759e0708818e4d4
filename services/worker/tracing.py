"""The worker's spans of a task's trace: each attempt, and the report of its result.

``wsched.attempt`` is a child of the scheduler's ``wsched.dispatch`` span of that attempt
(its ``traceparent`` comes in the leased task) and lasts while the steps run; the steps'
log lines carry its ids. ``wsched.report`` is the attempt's child from the result being
handed to the reporter to the scheduler's acknowledgement (results are reported in
batches, so several report spans may end at one call). The agent keeps no
:class:`AttemptSpans` when tracing is off.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from protos.wsched.v1 import worker_pb2
from services.observability import Tracing, parent_context
from services.worker.runner import Outcome, TaskOutcome


class AttemptSpans:
    """The open spans of the attempts this agent runs or reports, by lease token."""

    def __init__(self, *, tracing: Tracing, pipeline_id: str, worker: str) -> None:
        self._tracer = tracing.require()
        self._attributes = {"wsched.pipeline_id": pipeline_id, "wsched.worker": worker}
        self._attempts: dict[str, Span] = {}
        self._reports: dict[str, Span] = {}

    def start(self, task: worker_pb2.LeasedTask) -> None:
        if not task.trace_parent:
            return
        self._attempts[task.lease_token] = self._tracer.start_span(
            "wsched.attempt",
            context=parent_context(task.trace_parent),
            kind=SpanKind.CONSUMER,
            attributes={
                **self._attributes,
                "wsched.task_id": task.task_id,
                "wsched.attempt": task.attempt,
            },
        )

    @contextlib.contextmanager
    def running(self, token: str) -> Iterator[None]:
        """The attempt's span is the current one while its steps run (for the logs)."""
        span = self._attempts.get(token)
        if span is None:
            yield
            return
        with trace.use_span(span, end_on_exit=False):
            yield

    def finished(self, token: str, outcome: TaskOutcome | None) -> None:
        """End the attempt's span; a result to report opens its report span."""
        span = self._attempts.pop(token, None)
        if span is None:
            return
        if outcome is None:
            span.set_status(Status(StatusCode.ERROR, "stopped without a result"))
        else:
            span.set_attribute("wsched.outcome", outcome.outcome.value)
            if outcome.timed_out:
                span.set_attribute("wsched.timed_out", True)
            if outcome.outcome is Outcome.FAILED:
                span.set_status(Status(StatusCode.ERROR, (outcome.error or "")[:200]))
            self._reports[token] = self._tracer.start_span(
                "wsched.report",
                context=trace.set_span_in_context(span),
                kind=SpanKind.CLIENT,
                attributes=self._attributes,
            )
        span.end()

    def acknowledged(self, token: str, ack: worker_pb2.Ack.ValueType) -> None:
        span = self._reports.pop(token, None)
        if span is not None:
            span.set_attribute("wsched.ack", worker_pb2.Ack.Name(ack))
            span.end()

    def dropped(self, token: str) -> None:
        span = self._reports.pop(token, None)
        if span is not None:
            span.set_status(Status(StatusCode.ERROR, "lease lost before the acknowledgement"))
            span.end()

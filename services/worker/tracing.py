"""The worker's spans of a task's trace: each attempt, its steps, and the report of its
result.

``wsched.attempt`` is a child of the scheduler's ``wsched.dispatch`` span of that attempt
(its ``traceparent`` comes in the leased task) and lasts while the steps run. Each step
is a ``wsched.step`` under it (:class:`StepSpans`), with its last command's exit code and
whether it timed out; the executor is another process (often another container), so the
step's context goes to it in the call's environment, ``TRACEPARENT``, which the step's
commands and handler inherit and the executor's log lines carry. ``wsched.report`` is the
attempt's child from the result being handed to the reporter to the scheduler's
acknowledgement (results are reported in batches, so several report spans may end at one
call). The agent keeps no :class:`AttemptSpans` and its runner no :class:`StepSpans`
when tracing is off.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from protos.wsched.v1 import worker_pb2
from services.observability import TRACEPARENT_ENV, Tracing, parent_context, traceparent_of
from services.worker.definition import RenderedStep
from services.worker.runner import Outcome, StepRecord, TaskOutcome, TaskSpec


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


class StepSpans:
    """A ``wsched.step`` span around each step of an attempt (a :class:`StepTracer` of
    the runner): the child of the current span, the attempt's while its steps run."""

    def __init__(self, *, tracing: Tracing) -> None:
        self._tracer = tracing.require()

    @contextlib.contextmanager
    def step(self, step: RenderedStep, task: TaskSpec) -> Iterator[StepRecord]:
        if not trace.get_current_span().get_span_context().is_valid:
            yield StepRecord()  # an untraced task's steps start no trace of their own
            return
        span = self._tracer.start_span("wsched.step", attributes=_step_attributes(step, task))
        traceparent = traceparent_of(span)
        record = StepRecord(env={TRACEPARENT_ENV: traceparent} if traceparent else {})
        try:
            with trace.use_span(span, end_on_exit=False):
                yield record
        except BaseException as err:  # the task was cancelled or abandoned mid-step
            span.set_status(Status(StatusCode.ERROR, f"stopped: {type(err).__name__}"))
            raise
        finally:
            _record(span, record)
            span.end()


def _step_attributes(step: RenderedStep, task: TaskSpec) -> dict[str, str | int]:
    attributes: dict[str, str | int] = {
        # like every span of a task's trace: a span store can find each by the task
        "wsched.task_id": task.task_id,
        "wsched.attempt": task.attempt,
        "wsched.step": step.number,
        "wsched.step.name": f"step {step.number} ({step.executor})",
        "wsched.executor": step.executor,
    }
    if step.handler is not None:
        attributes["wsched.handler"] = step.handler
    return attributes


def _record(span: Span, record: StepRecord) -> None:
    if record.exit_code is not None:
        span.set_attribute("wsched.exit_code", record.exit_code)
    span.set_attribute("wsched.timed_out", record.timed_out)
    if record.error is not None:
        headline = record.error.splitlines()[0] if record.error else ""
        span.set_status(Status(StatusCode.ERROR, headline[:200]))

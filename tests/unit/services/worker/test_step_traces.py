"""The steps' spans, in memory: through the agent, each step of a traced attempt is a
``wsched.step`` under the attempt's span, with its exit code and whether it timed out,
and its commands get its context in ``TRACEPARENT``. An untraced task's steps, and a
runner with tracing off, make no spans and pass no context."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from protos.wsched.v1 import worker_pb2
from services.observability import Tracing, setup_tracing, traceparent_of
from services.worker.agent import Agent, AgentOptions
from services.worker.command import Command, CommandResult, HandlerResult
from services.worker.definition import PipelineDefinition
from services.worker.executor import in_step_context
from services.worker.runner import TaskRunner
from services.worker.tracing import AttemptSpans, StepSpans
from tests.unit.services.worker.fakes import FakeScheduler, leased
from tests.unit.services.worker.test_runner import (
    DEFINITION,
    HANDLERS,
    FakeExecutors,
    echo_script,
    ok,
    task,
)

OPTIONS = AgentOptions(
    concurrency=2, grace_s=5.0, poll_wait_ms=100, report_linger_s=0.005, final_flush_s=0.2
)


def _tracing(exporter: InMemorySpanExporter) -> Tracing:
    return setup_tracing(
        service="wsched-worker", endpoint=None, processors=[SimpleSpanProcessor(exporter)]
    )


def _dispatched(tracing: Tracing, task_id: str) -> worker_pb2.LeasedTask:
    """A leased task as the scheduler sends it when traced: its dispatch span's context."""
    span = tracing.require().start_span("wsched.dispatch")
    span.end()
    task = leased(task_id, data=b'{"url": "u"}')
    task.trace_parent = traceparent_of(span) or ""
    return task


async def _run_agent(
    tracing: Tracing,
    executors: FakeExecutors,
    tasks: Sequence[worker_pb2.LeasedTask],
    *,
    work_root: Path,
) -> FakeScheduler:
    """The agent with a traced runner, until every task is reported."""
    scheduler = FakeScheduler(queue=list(tasks))
    runner = _traced_runner(tracing, executors, work_root)
    agent = Agent(
        scheduler=scheduler,
        runner=runner,
        options=OPTIONS,
        spans=AttemptSpans(tracing=tracing, pipeline_id="p-1", worker="w1"),
    )
    stopping = asyncio.Event()
    running = asyncio.create_task(agent.run(stopping=stopping))
    await scheduler.until(lambda: len(scheduler.reported()) == len(tasks))
    stopping.set()
    await running
    return scheduler


def _named(spans: Sequence[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def _traced_runner(
    tracing: Tracing,
    executors: FakeExecutors,
    work_root: Path,
    definition: PipelineDefinition = DEFINITION,
    timeout_s: float = 60.0,
) -> TaskRunner:
    """A runner with step spans, as a traced agent builds it."""
    return TaskRunner(
        definition=definition,
        executors=executors,
        work_root=work_root,
        timeout_s=timeout_s,
        steps=StepSpans(tracing=tracing),
    )


def _span_id_in(command: Command) -> int:
    """The span id the command's ``TRACEPARENT`` names."""
    return int(command.env["TRACEPARENT"].split("-")[2], 16)


async def test_each_step_is_a_child_of_its_attempt_with_its_exit_code(tmp_path: Path) -> None:
    def script(executor: str, command: Command) -> CommandResult:
        if command.text.startswith("convert"):
            return CommandResult(exit_code=3, stderr_tail=b"bad input format\n")
        return ok(b"fetched")

    exporter = InMemorySpanExporter()
    tracing = _tracing(exporter)
    executors = FakeExecutors(script=script)
    scheduler = await _run_agent(
        tracing, executors, [_dispatched(tracing, "t")], work_root=tmp_path / "work"
    )
    assert scheduler.reported()["lease-t-1"].outcome == worker_pb2.OUTCOME_FAILED

    spans = exporter.get_finished_spans()
    [attempt] = _named(spans, "wsched.attempt")
    fetch, convert = _named(spans, "wsched.step")
    assert attempt.context is not None
    for step in (fetch, convert):
        assert step.parent is not None and step.parent.span_id == attempt.context.span_id
        assert step.context is not None and step.context.trace_id == attempt.context.trace_id
    assert fetch.attributes is not None and convert.attributes is not None
    assert (fetch.attributes["wsched.step"], fetch.attributes["wsched.executor"]) == (1, "fetch")
    assert fetch.attributes["wsched.step.name"] == "step 1 (fetch)"
    assert (convert.attributes["wsched.task_id"], convert.attributes["wsched.attempt"]) == ("t", 1)
    assert fetch.attributes["wsched.exit_code"] == 0
    assert fetch.attributes["wsched.timed_out"] is False
    assert fetch.status.status_code is StatusCode.UNSET
    assert convert.attributes["wsched.exit_code"] == 3
    assert convert.status.status_code is StatusCode.ERROR
    assert convert.status.description == "step 2 (convert), command 1 exited with code 3"
    # Each command carries its own step's context to the executor.
    ran = [command for _, command in executors.ran]
    assert fetch.context is not None and convert.context is not None
    assert [_span_id_in(c) for c in ran] == [fetch.context.span_id, convert.context.span_id]


async def test_a_timed_out_step_says_so(tmp_path: Path) -> None:
    exporter = InMemorySpanExporter()
    tracing = _tracing(exporter)
    executors = FakeExecutors(
        script=lambda _e, _c: CommandResult(exit_code=137, killed=True, signal=9, timed_out=True)
    )
    runner = _traced_runner(tracing, executors, tmp_path / "work", timeout_s=5.0)
    with tracing.require().start_as_current_span("wsched.attempt"):
        outcome = await runner(task({"url": "u"}))
    assert outcome.timed_out
    [step] = _named(exporter.get_finished_spans(), "wsched.step")
    assert step.attributes is not None
    assert step.attributes["wsched.timed_out"] is True
    assert step.attributes["wsched.exit_code"] == 137
    assert step.status.status_code is StatusCode.ERROR


async def test_a_handler_step_has_no_exit_code_and_gets_the_context(tmp_path: Path) -> None:
    exporter = InMemorySpanExporter()
    tracing = _tracing(exporter)
    executors = FakeExecutors(script=echo_script, answer=HandlerResult(timed_out=True))
    runner = _traced_runner(
        tracing, executors, tmp_path / "work", definition=HANDLERS, timeout_s=5.0
    )
    with tracing.require().start_as_current_span("wsched.attempt"):
        await runner(task({"url": "u"}))
    command_step, handler_step = _named(exporter.get_finished_spans(), "wsched.step")
    assert handler_step.attributes is not None and handler_step.context is not None
    assert handler_step.attributes["wsched.handler"] == "mypkg.tasks:resize"
    assert "wsched.exit_code" not in handler_step.attributes
    assert handler_step.attributes["wsched.timed_out"] is True
    [(_, call)] = executors.calls
    assert int(call.env["TRACEPARENT"].split("-")[2], 16) == handler_step.context.span_id
    assert command_step.attributes is not None
    assert command_step.attributes["wsched.exit_code"] == 0


async def test_a_step_cancelled_mid_way_ends_its_span_as_an_error(tmp_path: Path) -> None:
    started = asyncio.Event()

    class Hanging(FakeExecutors):
        async def run(self, executor: str, command: Command) -> CommandResult:
            started.set()
            await asyncio.Event().wait()
            raise AssertionError("never answers")

    exporter = InMemorySpanExporter()
    tracing = _tracing(exporter)
    runner = _traced_runner(tracing, Hanging(script=echo_script), tmp_path / "work")

    async def attempt() -> None:
        with tracing.require().start_as_current_span("wsched.attempt"):
            await runner(task({"url": "u"}))

    running = asyncio.create_task(attempt())
    await started.wait()
    running.cancel()
    await asyncio.gather(running, return_exceptions=True)
    [step] = _named(exporter.get_finished_spans(), "wsched.step")
    assert step.status.status_code is StatusCode.ERROR
    assert step.status.description == "stopped: CancelledError"


async def test_an_untraced_task_and_tracing_off_pass_no_context(tmp_path: Path) -> None:
    exporter = InMemorySpanExporter()
    tracing = _tracing(exporter)
    traced = FakeExecutors(script=echo_script)
    # Traced agent, but the task came without a context: no attempt, so no step spans.
    runner = _traced_runner(tracing, traced, tmp_path / "a")
    await runner(task({"url": "u"}))
    off = FakeExecutors(script=echo_script)
    await TaskRunner(
        definition=DEFINITION, executors=off, work_root=tmp_path / "b", timeout_s=60.0
    )(task({"url": "u"}))
    assert exporter.get_finished_spans() == ()
    for executors in (traced, off):
        assert [("TRACEPARENT" in c.env) for _, c in executors.ran] == [False, False, False]


def test_the_executor_logs_under_the_steps_context() -> None:
    tracing = _tracing(InMemorySpanExporter())
    with tracing.require().start_as_current_span("wsched.step") as span:
        traceparent = traceparent_of(span)
    assert traceparent is not None
    with in_step_context({"TRACEPARENT": traceparent}):
        inside = trace.get_current_span().get_span_context()
    assert (inside.trace_id, inside.span_id) == (
        span.get_span_context().trace_id,
        span.get_span_context().span_id,
    )
    with in_step_context({}):
        assert not trace.get_current_span().get_span_context().is_valid

"""Runs one task: a fresh work directory, the pipeline's steps in order on their executors.

Outcome. The first command that exits non-zero stops the task: FAILED, with an error
naming the step and command, its exit code and the tail of its stderr.

Execution timeout. An attempt's time is bounded by, first to last: the task's own
execution timeout, else its pipeline's (both come from the scheduler with the task),
else the definition's ``timeout_s``, else ``WSCHED_WORKER_TASK_TIMEOUT_S``. The running
command gets what is left as its timeout, and its executor kills the command's whole
process group then; the failure is reported ``timed_out`` and says "timed out after
N s", and the scheduler retries it like any failure.

Result and per-step outputs. The result is the stdout of the last command, at most
``max_result_bytes`` (the scheduler's limit, 256 KiB): longer output is cut and ends
with a note saying so. Every other command's output is kept only as diagnostics: the
first bytes of its stdout and the tail of its stderr go into the error when a later
command fails (bounded so the error fits the scheduler's 8192 characters), and into the
agent's debug log when the task succeeds. Large outputs belong in files the last
command uploads somewhere, with a reference as the result.

Traces. With tracing on, each step runs inside a span of its own (a :class:`StepTracer`,
made in :mod:`services.worker.tracing`), whose context its commands and handler get in
``TRACEPARENT``; with it off the runner has no tracer and skips that on one check.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Protocol

from services.worker.command import (
    Command,
    CommandResult,
    ExecutorError,
    Executors,
    HandlerCall,
)
from services.worker.definition import PipelineDefinition, RenderedStep
from services.worker.settings import MAX_RESULT_BYTES

log = logging.getLogger("wsched.worker.runner")

#: Bytes of stdout kept from commands other than the last (diagnostics only).
_DIAGNOSTIC_STDOUT = 200
#: Of a failing command's stderr tail, the characters that go into the error.
_ERROR_STDERR = 3000
#: Room for earlier commands' summaries in the error.
_ERROR_TRAIL = 3000


class Outcome(Enum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True, kw_only=True)
class TaskSpec:
    task_id: str
    attempt: int
    data: bytes  # the client's JSON
    #: The execution timeout the scheduler sent (the task's or its pipeline's); None: none.
    timeout_s: float | None = None
    #: A schedule's run: its nominal fire time, RFC 3339 (a backfill's steps need it).
    fire_at: str | None = None


@dataclass(frozen=True, kw_only=True)
class TaskOutcome:
    outcome: Outcome
    result: bytes = b""
    error: str = ""
    #: Another attempt would fail the same way: the scheduler ends the task at once.
    non_retryable: bool = False
    #: Killed at its execution timeout (retried like any failure).
    timed_out: bool = False


@dataclass(kw_only=True)
class StepRecord:
    """What became of one step, for its span: filled in by the runner as the step runs."""

    #: Set by the tracer: the variables that carry the step's context to its commands.
    env: Mapping[str, str] = field(default_factory=dict)
    #: The exit code of the step's last command that ran (None: a handler, or none ran).
    exit_code: int | None = None
    timed_out: bool = False
    #: The step's failure (None: it succeeded).
    error: str | None = None


class StepTracer(Protocol):
    """Opens a span around each step of an attempt (``services.worker.tracing``)."""

    def step(self, step: RenderedStep, task: TaskSpec) -> AbstractContextManager[StepRecord]: ...


def _make_dir(work_dir: Path) -> None:
    try:
        os.mkdir(work_dir)
    except FileNotFoundError:  # the first task: the work root is made once
        work_dir.parent.mkdir(parents=True, exist_ok=True)
        os.mkdir(work_dir)
    # Executors in other containers share the pod's fsGroup, not the agent's user.
    os.chmod(work_dir, 0o770)  # noqa: S103 - the pod's group: its executors


def _is_empty(work_dir: Path) -> bool:
    try:
        with os.scandir(work_dir) as entries:
            return next(entries, None) is None
    except OSError:  # gone, or made unreadable by its task: not reused
        return False


class _WorkDirs:
    """Task directories, reused: a task that leaves its directory empty (most do) hands
    it to the next task instead of removing it, so a task costs one ``scandir`` rather
    than a ``mkdir``, a ``chmod`` and an ``rmdir``. On ext4 those took 150-400 µs of
    kernel time per task, half of the agent's CPU under a no-op handler (py-spy). A
    directory left with files in it is removed in a thread and never reused."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._free: list[Path] = []

    def take(self) -> Path:
        if self._free:
            return self._free.pop()
        work_dir = self._root / f"task-{uuid.uuid4().hex[:12]}"
        _make_dir(work_dir)
        return work_dir

    async def give_back(self, work_dir: Path) -> None:
        if _is_empty(work_dir):
            try:
                os.chmod(work_dir, 0o770)  # noqa: S103 - as made: the task may have changed it
            except OSError:
                pass
            else:
                self._free.append(work_dir)
                return
        await asyncio.to_thread(shutil.rmtree, work_dir, ignore_errors=True)

    async def close(self) -> None:
        """Remove the directories kept for reuse."""
        free, self._free = self._free, []
        for work_dir in free:
            await asyncio.to_thread(shutil.rmtree, work_dir, ignore_errors=True)


def failed(error: str, *, non_retryable: bool = False, timed_out: bool = False) -> TaskOutcome:
    return TaskOutcome(
        outcome=Outcome.FAILED, error=error, non_retryable=non_retryable, timed_out=timed_out
    )


@dataclass(frozen=True, kw_only=True)
class Limit:
    """An attempt's execution timeout and where it came from, for the error text."""

    seconds: float
    source: str

    def text(self) -> str:
        return f"timed out after {self.seconds:g} s ({self.source})"


def limit_for(task: TaskSpec, *, definition_s: float | None, agent_s: float) -> Limit:
    """The execution timeout of one attempt: the scheduler's (task > pipeline), else the
    definition's, else the agent's setting."""
    if task.timeout_s:
        return Limit(
            seconds=task.timeout_s, source="the task's or its pipeline's execution_timeout"
        )
    if definition_s:
        return Limit(seconds=definition_s, source="the pipeline definition's timeout_s")
    return Limit(seconds=agent_s, source="WSCHED_WORKER_TASK_TIMEOUT_S")


def truncate_result(stdout: bytes, *, total_bytes: int, limit: int) -> bytes:
    """``stdout`` if it is whole and fits ``limit``; else its head and a note, within ``limit``."""
    total = max(total_bytes, len(stdout))
    if total <= limit and len(stdout) == total:
        return stdout

    def note(kept: int) -> bytes:
        return f"\n[wsched: output truncated: {total} bytes, the first {kept} kept]\n".encode()

    if len(note(limit)) >= limit:  # no room for the note (the settings forbid such limits)
        return stdout[:limit]
    kept = limit - len(note(limit))
    return stdout[:kept] + note(kept)


@dataclass(kw_only=True)
class _Trail:
    """One line per command that ran, for the error of a later failure and the debug log."""

    lines: list[str] = field(default_factory=list)

    def add(self, where: str, result: CommandResult) -> None:
        excerpt = result.stdout[:_DIAGNOSTIC_STDOUT].decode(errors="replace")
        more = "..." if result.stdout_total_bytes > _DIAGNOSTIC_STDOUT else ""
        self.lines.append(
            f"{where}: exit {result.exit_code} in {result.duration_ms} ms; "
            f"stdout {result.stdout_total_bytes} bytes: {excerpt!r}{more}"
        )

    def text(self, room: int) -> str:
        if not self.lines:
            return ""
        kept: list[str] = []
        for line in reversed(self.lines):  # the commands just before the failure matter most
            if sum(len(k) + 1 for k in kept) + len(line) > room:
                kept.append("(earlier commands left out)")
                break
            kept.append(line)
        return "\nearlier commands:\n" + "\n".join(reversed(kept))


@dataclass(kw_only=True)
class _Run:
    """One attempt in progress: its limits, the output so far and the trail of steps."""

    task: TaskSpec
    work_dir: Path
    limit: Limit
    deadline: float
    trail: _Trail = field(default_factory=_Trail)
    #: The output of the last step that succeeded: the result if no step follows.
    last: bytes | None = None
    #: The deadline passed between steps.
    over: bool = False
    #: The exit code of the last command run (None once a command could not run).
    exit_code: int | None = None
    #: Added to the task's variables for the current step (its trace context).
    step_env: Mapping[str, str] = field(default_factory=dict)


def _task_env(run: _Run) -> dict[str, str]:
    env = {
        "WSCHED_TASK_ID": run.task.task_id,
        "WSCHED_TASK_ATTEMPT": str(run.task.attempt),
        "WSCHED_WORK_DIR": str(run.work_dir),
        **run.step_env,
    }
    if run.task.fire_at is not None:
        env["WSCHED_FIRE_AT"] = run.task.fire_at
    return env


class TaskRunner:
    def __init__(
        self,
        *,
        definition: PipelineDefinition,
        executors: Executors,
        work_root: Path,
        timeout_s: float,
        max_result_bytes: int = MAX_RESULT_BYTES,
        clock: Callable[[], float] = time.monotonic,
        steps: StepTracer | None = None,
    ) -> None:
        """``steps``: the steps' spans; None when tracing is off."""
        self._definition = definition
        self._executors = executors
        self._work_dirs = _WorkDirs(work_root)
        self._timeout_s = timeout_s
        self._max_result_bytes = max_result_bytes
        self._clock = clock
        self._steps = steps

    async def __call__(self, task: TaskSpec) -> TaskOutcome:
        # System calls on a local directory, in the loop: a thread hand-off each way cost
        # more (py-spy); see ``_WorkDirs`` for why directories are reused.
        work_dir = self._work_dirs.take()
        try:
            return await self._run_in(task, work_dir)
        finally:
            await self._work_dirs.give_back(work_dir)

    async def close(self) -> None:
        """Remove the work directories kept for the next tasks."""
        await self._work_dirs.close()

    async def _run_in(self, task: TaskSpec, work_dir: Path) -> TaskOutcome:
        limit = limit_for(task, definition_s=self._definition.timeout_s, agent_s=self._timeout_s)
        try:
            data = json.loads(task.data) if task.data else None
            steps = self._definition.render(data, work_dir=str(work_dir))
        except ValueError as err:  # not JSON, or a placeholder the data cannot fill
            return failed(str(err), non_retryable=True)  # the same data fails the same way
        run = _Run(
            task=task, work_dir=work_dir, limit=limit, deadline=self._clock() + limit.seconds
        )
        for step in steps:
            final = step is steps[-1]
            if self._steps is None:
                failure = await self._run_step(run, step, final=final)
            else:
                failure = await self._traced_step(run, step, final=final, tracer=self._steps)
            if failure is not None:
                return failure
        log.debug("task %s attempt %d:%s", task.task_id, task.attempt, run.trail.text(10_000))
        if run.last is None:  # a validated definition has at least one command
            return failed("the pipeline definition has no commands")
        return TaskOutcome(outcome=Outcome.SUCCEEDED, result=run.last)

    async def _traced_step(
        self, run: _Run, step: RenderedStep, *, final: bool, tracer: StepTracer
    ) -> TaskOutcome | None:
        """:meth:`_run_step` inside the step's span, its commands in the span's context."""
        with tracer.step(step, run.task) as record:
            run.step_env, run.exit_code = record.env, None
            failure = await self._run_step(run, step, final=final)
            record.exit_code = run.exit_code
            if failure is not None:
                record.timed_out, record.error = failure.timed_out, failure.error
        run.step_env = {}
        return failure

    async def _run_step(self, run: _Run, step: RenderedStep, *, final: bool) -> TaskOutcome | None:
        """Run one step; its failure, or None once it succeeded (``run.last`` is its output)."""
        if step.handler is not None:
            return await self._call_handler(run, step)
        for index, text in enumerate(step.commands):
            last = final and index == len(step.commands) - 1
            where = step.describe(index)
            result = await self._run_command(run, step, text, last)
            if isinstance(result, str):
                return failed(
                    f"{where}: {result}{run.trail.text(_ERROR_TRAIL)}", timed_out=run.over
                )
            if not result.ok:
                return failed(
                    self._failure(where, result, run.limit) + run.trail.text(_ERROR_TRAIL),
                    non_retryable=self._final_exit(result),
                    timed_out=result.timed_out,
                )
            run.trail.add(where, result)
            run.last = truncate_result(
                result.stdout, total_bytes=result.stdout_total_bytes, limit=self._max_result_bytes
            )
        return None

    async def _call_handler(self, run: _Run, step: RenderedStep) -> TaskOutcome | None:
        """Call a Python handler step on its executor; its failure, or None."""
        where = step.describe()
        remaining = run.deadline - self._clock()
        if remaining <= 0:
            return failed(f"{where} {run.limit.text()}", timed_out=True)
        call = HandlerCall(
            handler=step.handler or "",
            data=run.task.data,
            pool=step.pool,
            timeout_s=remaining,
            max_result_bytes=self._max_result_bytes,
            env=_task_env(run),
        )
        try:
            result = await self._executors.call(step.executor, call)
        except ExecutorError as err:
            return failed(f"{where}: {err}{run.trail.text(_ERROR_TRAIL)}")
        if result.timed_out:
            stopped = (
                "the thread was abandoned, still running"
                if step.pool == "thread"
                else "its worker process was killed"
            )
            return failed(f"{where} {run.limit.text()}; {stopped}", timed_out=True)
        if not result.ok:
            return failed(
                f"{where} failed:\n{result.error[-_ERROR_STDERR:]}{run.trail.text(_ERROR_TRAIL)}",
                non_retryable=result.non_retryable,
            )
        run.trail.lines.append(
            f"{where}: returned {len(result.result)} bytes in {result.duration_ms} ms"
        )
        run.last = result.result
        return None

    async def _run_command(
        self, run: _Run, step: RenderedStep, text: str, final: bool
    ) -> CommandResult | str:
        """The command's result, or why it could not run."""
        run.exit_code = None
        remaining = run.deadline - self._clock()
        if remaining <= 0:
            run.over = True
            return run.limit.text()
        command = Command(
            text=text,
            work_dir=str(run.work_dir),
            env=_task_env(run),
            timeout_s=remaining,
            max_stdout_bytes=self._max_result_bytes if final else _DIAGNOSTIC_STDOUT,
        )
        try:
            result = await self._executors.run(step.executor, command)
        except ExecutorError as err:
            return str(err)
        run.exit_code = result.exit_code
        return result

    def _final_exit(self, result: CommandResult) -> bool:
        """Whether the command exited by itself with a code the definition calls final."""
        if result.timed_out or result.killed:
            return False
        return result.exit_code in self._definition.non_retryable_exit_codes

    @staticmethod
    def _failure(where: str, result: CommandResult, limit: Limit) -> str:
        if result.timed_out:
            headline = f"{where} {limit.text()}; its process group was killed"
        elif result.killed:
            headline = (
                f"{where} was killed by signal {result.signal} (exit code {result.exit_code})"
            )
        else:
            headline = f"{where} exited with code {result.exit_code}"
        stderr = result.stderr_tail.decode(errors="replace")[-_ERROR_STDERR:]
        return f"{headline}\nstderr (tail):\n{stderr}" if stderr else f"{headline} (no stderr)"

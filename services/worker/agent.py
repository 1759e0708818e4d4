"""``wsched worker``: the agent of a pipeline pod. Polls the scheduler, runs tasks on the
pod's executors, heartbeats their leases and reports their results.

Polling. Whenever it has free slots (``WSCHED_WORKER_CONCURRENCY`` tasks run at once)
the agent long-polls for as many tasks as it has slots. The client follows the
scheduler's redirects to the replica serving the pipeline and retries transient errors
with backoff.

Leases. Every third of the lease timeout the agent heartbeats the leases of its running
tasks and of results not yet acknowledged, and obeys the verdicts: CANCELLED stops the
running command (cancelling the executor call kills it) and reports the task
cancelled; LEASE_LOST (another attempt owns the task) stops it and drops its result.

Results go out in batches and are kept until the scheduler acknowledged them (see
:mod:`services.worker.reporter`).

Shutdown. On SIGTERM (or SIGINT) the agent stops polling; a poll in flight is
cancelled, and tasks it had already been granted run again once their leases expire.
Running tasks get ``WSCHED_WORKER_GRACE_S`` (default 30) to finish and be reported.
Tasks still running then are abandoned without a report: their commands are killed, and
their leases expire, so they run again elsewhere with the next attempt. A second signal
abandons them at once. The process then exits 0. (Handing leases back at once instead
of letting them expire would need a Release call in the worker protocol.) The pod's
``terminationGracePeriodSeconds`` should exceed the grace by ten seconds or so, for the
last report.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from protos.wsched.v1 import worker_pb2
from services.observability import log_context
from services.worker.client import WorkerRejected
from services.worker.reporter import Reporter, ReportPort
from services.worker.runner import Outcome, TaskOutcome, TaskSpec, failed
from services.worker.settings import AgentSettings
from services.worker.slots import Slots, wait_any
from services.worker.tracing import AttemptSpans

log = logging.getLogger("wsched.worker")

Runner = Callable[[TaskSpec], Awaitable[TaskOutcome]]

_OUTCOMES = {
    Outcome.SUCCEEDED: worker_pb2.OUTCOME_SUCCEEDED,
    Outcome.FAILED: worker_pb2.OUTCOME_FAILED,
    Outcome.CANCELLED: worker_pb2.OUTCOME_CANCELLED,
}


class Scheduler(ReportPort, Protocol):
    async def poll(
        self, *, max_tasks: int, max_bytes: int = ..., wait_ms: int = ...
    ) -> worker_pb2.PollResponse: ...

    async def heartbeat(self, tokens: Sequence[str]) -> worker_pb2.HeartbeatResponse: ...


@dataclass(frozen=True, kw_only=True)
class AgentOptions:
    concurrency: int = 4
    grace_s: float = 30.0
    poll_wait_ms: int = 10_000
    poll_max_bytes: int = 1024 * 1024
    poll_linger_s: float = 0.005
    report_linger_s: float = 0.02
    report_batch: int = 100
    #: Until the scheduler names its lease timeout in a poll answer.
    lease_timeout_s: float = 30.0
    #: The last report after the grace period gets at least this long.
    final_flush_s: float = 5.0

    @classmethod
    def of(cls, settings: AgentSettings) -> AgentOptions:
        return cls(
            concurrency=settings.concurrency,
            grace_s=settings.grace_s,
            poll_wait_ms=settings.poll_wait_ms,
            poll_max_bytes=settings.poll_max_bytes,
            poll_linger_s=settings.poll_linger_ms / 1000,
            report_linger_s=settings.report_linger_ms / 1000,
            report_batch=settings.report_batch,
        )


class _Stop(Enum):
    CANCELLED = "cancelled"  # report it cancelled
    LEASE_LOST = "lease lost"  # drop the result
    ABANDONED = "abandoned"  # shutting down: no report, the lease expires


@dataclass(kw_only=True)
class _Job:
    spec: TaskSpec
    token: str
    task: asyncio.Task[None] | None = None
    stop: _Stop | None = None

    def halt(self, why: _Stop) -> None:
        self.stop = why
        if self.task is not None:
            self.task.cancel()


class Agent:
    """Use as ``await Agent(...).run(stopping=event)``; returns after a clean shutdown.
    ``slots``: shared with other pipelines' agents in the same process (default: its own,
    ``options.concurrency`` of them)."""

    def __init__(
        self,
        *,
        scheduler: Scheduler,
        runner: Runner,
        options: AgentOptions,
        spans: AttemptSpans | None = None,
        slots: Slots | None = None,
    ) -> None:
        """``spans``: the attempts' trace spans; None when tracing is off."""
        self._slots = slots or Slots(options.concurrency)
        self._slots.join()
        self._scheduler = scheduler
        self._runner = runner
        self._options = options
        self._spans = spans
        self._reporter = Reporter(
            scheduler=scheduler,
            linger_s=options.report_linger_s,
            max_batch=options.report_batch,
            on_ack=spans.acknowledged if spans is not None else None,
        )
        self._jobs: dict[str, _Job] = {}
        self._slot_freed = asyncio.Event()
        self._lease_timeout_s = options.lease_timeout_s
        self._lease_timeout_changed = asyncio.Event()

    async def run(self, *, stopping: asyncio.Event, now: asyncio.Event | None = None) -> None:
        """Work until ``stopping``, then finish within the grace period (``now`` cuts it
        short). Raises WorkerRejected, after that shutdown, if polling failed for good."""
        background = [
            asyncio.create_task(self._reporter.run(), name="reporter"),
            asyncio.create_task(self._heartbeats(), name="heartbeats"),
        ]
        failure: WorkerRejected | None = None
        try:
            try:
                await self._poll_until(stopping)
            except WorkerRejected as err:
                failure = err
                log.error("polling failed: %s; finishing the running tasks", err)
            await self._drain(now or asyncio.Event())
        finally:
            for job in list(self._jobs.values()):
                job.halt(_Stop.ABANDONED)
            for task in background:
                task.cancel()
            jobs = [job.task for job in self._jobs.values() if job.task is not None]
            await asyncio.gather(*background, *jobs, return_exceptions=True)
        if failure is not None:
            raise failure

    # -- polling --------------------------------------------------------------------------

    async def _poll_until(self, stopping: asyncio.Event) -> None:
        found_tasks = False  # alone, a pipeline asks for every free slot all the same
        # While tasks keep coming, a poll gathers a quarter of the slots for a moment
        # first: polls of one task each cost the scheduler several times as much per
        # task (measured with ``wsched bench-worker``), and the moment is short next to
        # a task's own run.
        gather = max(1, self._slots.capacity // 4)
        while not stopping.is_set():
            linger_s = self._options.poll_linger_s if found_tasks else 0.0
            most = self._slots.ask(found_tasks=found_tasks)
            held = await self._slots.take(most, stopping, gather=gather, linger_s=linger_s)
            if held == 0:
                return
            wait_ms = self._options.poll_wait_ms if self._slots.long_poll(held) else 0
            try:
                reply = await self._poll(held, stopping, wait_ms)
            except BaseException:
                self._slots.give(held)
                raise
            if reply is None:
                self._slots.give(held)
                return
            self._learn_lease_timeout(reply.lease_timeout_ms)
            # The scheduler grants at most what was asked; each task gives its slot back.
            granted = reply.tasks[:held]
            self._slots.give(held - len(granted))
            found_tasks = bool(granted)
            for task in granted:
                self._start(task)

    async def _poll(
        self, free: int, stopping: asyncio.Event, wait_ms: int
    ) -> worker_pb2.PollResponse | None:
        """A poll's answer, or None if ``stopping`` came first (the poll is cancelled)."""
        poll = asyncio.create_task(
            self._scheduler.poll(
                max_tasks=free, max_bytes=self._options.poll_max_bytes, wait_ms=wait_ms
            )
        )
        stop = asyncio.create_task(stopping.wait())
        try:
            await asyncio.wait({poll, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not poll.done():
                poll.cancel()
                with contextlib.suppress(asyncio.CancelledError, WorkerRejected):
                    await poll
        if poll.cancelled():
            return None
        return poll.result()  # granted tasks are run even when stopping came meanwhile

    # -- running --------------------------------------------------------------------------

    def _start(self, task: worker_pb2.LeasedTask) -> None:
        spec = TaskSpec(
            task_id=task.task_id,
            attempt=task.attempt,
            data=task.data,
            timeout_s=task.execution_timeout_ms / 1000 if task.execution_timeout_ms else None,
            fire_at=_fire_at(task.fire_at_ms),
        )
        job = _Job(spec=spec, token=task.lease_token)
        if self._spans is not None:
            self._spans.start(task)
        self._jobs[job.token] = job
        job.task = asyncio.create_task(self._execute(job), name=f"task {task.task_id}")

    async def _execute(self, job: _Job) -> None:
        # The task's id (and its attempt's span, when traced) is on every line logged
        # while it runs, the outcome's included.
        running = self._spans.running(job.token) if self._spans else contextlib.nullcontext()
        with log_context(task_id=job.spec.task_id), running:
            outcome = await self._outcome(job)
            if outcome is not None:
                self._log_outcome(job, outcome)
        if self._spans is not None:
            self._spans.finished(job.token, outcome)
        if outcome is not None:
            self._reporter.add(
                worker_pb2.TaskResult(
                    lease_token=job.token,
                    outcome=_OUTCOMES[outcome.outcome],
                    result=outcome.result,
                    error=outcome.error,
                    non_retryable=outcome.non_retryable,
                    timed_out=outcome.timed_out,
                )
            )

    async def _outcome(self, job: _Job) -> TaskOutcome | None:
        """What to report of the job (None: nothing, its lease was lost or abandoned)."""
        outcome: TaskOutcome | None
        try:
            outcome = await self._runner(job.spec)
        except asyncio.CancelledError:
            if job.stop is None:
                raise  # not ours: the agent itself is being torn down
            outcome = self._after_stop(job)
        except Exception as err:  # a bug must fail the task, not the agent
            log.exception("task %s: the worker failed to run it", job.spec.task_id)
            outcome = failed(f"the worker failed to run the task: {type(err).__name__}: {err}")
        finally:
            del self._jobs[job.token]
            self._slots.give(1)
            self._slot_freed.set()
        return outcome

    def _after_stop(self, job: _Job) -> TaskOutcome | None:
        if job.stop is _Stop.CANCELLED:
            log.info("task %s cancelled: its command was stopped", job.spec.task_id)
            return TaskOutcome(outcome=Outcome.CANCELLED, error="cancelled while running")
        if job.stop is _Stop.LEASE_LOST:
            log.warning(
                "task %s attempt %d: lease lost (another attempt owns the task); "
                "stopped, result dropped",
                job.spec.task_id,
                job.spec.attempt,
            )
        return None

    @staticmethod
    def _log_outcome(job: _Job, outcome: TaskOutcome) -> None:
        if outcome.outcome is Outcome.FAILED:
            headline = outcome.error.splitlines()[0] if outcome.error else ""
            log.info("task %s attempt %d failed: %s", job.spec.task_id, job.spec.attempt, headline)
        else:
            log.debug("task %s attempt %d %s", job.spec.task_id, job.spec.attempt, outcome.outcome)

    # -- leases ---------------------------------------------------------------------------

    def _learn_lease_timeout(self, lease_timeout_ms: int) -> None:
        if lease_timeout_ms and lease_timeout_ms / 1000 != self._lease_timeout_s:
            self._lease_timeout_s = lease_timeout_ms / 1000
            self._lease_timeout_changed.set()

    async def _heartbeats(self) -> None:
        while True:
            self._lease_timeout_changed.clear()
            await wait_any([self._lease_timeout_changed], self._lease_timeout_s / 3)
            if self._lease_timeout_changed.is_set():
                continue  # the first poll's answer: beat on its schedule from now
            tokens = [*self._jobs, *self._reporter.pending_tokens()]
            if not tokens:
                continue
            try:
                reply = await self._scheduler.heartbeat(tokens)
            except WorkerRejected as err:
                log.warning("heartbeat of %d lease(s) failed: %s", len(tokens), err)
                continue
            self._learn_lease_timeout(reply.lease_timeout_ms)
            for verdict in reply.verdicts:
                self._obey(verdict.lease_token, verdict.verdict)

    def _obey(self, token: str, verdict: worker_pb2.Verdict.ValueType) -> None:
        job = self._jobs.get(token)
        if verdict == worker_pb2.VERDICT_CANCELLED and job is not None and job.stop is None:
            job.halt(_Stop.CANCELLED)
        elif verdict == worker_pb2.VERDICT_LEASE_LOST:
            if job is not None:
                job.halt(_Stop.LEASE_LOST)
            elif self._reporter.drop(token):
                log.warning("lease %s lost before its result was acknowledged: dropped", token)
                if self._spans is not None:
                    self._spans.dropped(token)

    # -- shutdown -------------------------------------------------------------------------

    async def _drain(self, now: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._options.grace_s
        if self._jobs:
            log.info(
                "stopping: %d task(s) running get up to %g s to finish",
                len(self._jobs),
                self._options.grace_s,
            )
        while self._jobs and not now.is_set() and loop.time() < deadline:
            self._slot_freed.clear()
            await wait_any([self._slot_freed, now], deadline - loop.time())
        await self._abandon()
        flush_s = max(deadline - loop.time(), self._options.final_flush_s)
        if not await self._reporter.flush(flush_s):
            log.warning(
                "%d result(s) not acknowledged within %g s: those tasks run again once "
                "their leases expire",
                len(self._reporter.pending_tokens()),
                flush_s,
            )

    async def _abandon(self) -> None:
        jobs = list(self._jobs.values())
        if not jobs:
            return
        log.warning(
            "abandoning %d unfinished task(s) (%s): their leases expire and they run again",
            len(jobs),
            ", ".join(job.spec.task_id for job in jobs),
        )
        for job in jobs:
            job.halt(_Stop.ABANDONED)
        await asyncio.gather(*(job.task for job in jobs if job.task), return_exceptions=True)


# -- the process ----------------------------------------------------------------------------


def _fire_at(fire_at_ms: int) -> str | None:
    """A schedule's nominal fire time as its steps see it (``WSCHED_FIRE_AT``)."""
    if not fire_at_ms:
        return None
    at = dt.datetime.fromtimestamp(fire_at_ms / 1000, tz=dt.UTC)
    return at.replace(tzinfo=None).isoformat() + "Z"


if __name__ == "__main__":  # ``python -m services.worker.agent``, as ``wsched worker``
    from services.worker.agent_process import worker_main

    worker_main()

"""The agent's loop on an in-memory scheduler and fake runners: slots, verdicts, shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest

from protos.wsched.v1 import worker_pb2
from services.worker.agent import Agent, AgentOptions
from services.worker.agent_process import check_executors
from services.worker.client import WorkerRejected
from services.worker.definition import DefinitionError, PipelineDefinition
from services.worker.runner import Outcome, TaskOutcome, TaskSpec
from services.worker.slots import Slots
from tests.unit.services.worker.fakes import FakeScheduler, leased

OPTIONS = AgentOptions(
    concurrency=3, grace_s=5.0, poll_wait_ms=100, report_linger_s=0.005, final_flush_s=0.2
)


@dataclass(kw_only=True)
class FakeRunner:
    """Runs a task until its event is set (``hold``) or at once; records what it saw."""

    hold: set[str] = field(default_factory=set)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    running: set[str] = field(default_factory=set)
    most_at_once: int = 0
    started: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    crash: set[str] = field(default_factory=set)
    final: set[str] = field(default_factory=set)

    async def __call__(self, task: TaskSpec) -> TaskOutcome:
        self.started.append(task.task_id)
        self.running.add(task.task_id)
        self.most_at_once = max(self.most_at_once, len(self.running))
        try:
            await asyncio.sleep(0.01)
            if task.task_id in self.crash:
                raise RuntimeError("disk full")
            if task.task_id in self.hold:
                await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled.append(task.task_id)
            raise
        finally:
            self.running.discard(task.task_id)
        if task.task_id in self.final:
            return TaskOutcome(outcome=Outcome.FAILED, error="bad input", non_retryable=True)
        return TaskOutcome(outcome=Outcome.SUCCEEDED, result=f"done {task.task_id}".encode())


class RunningTogether:
    """Wraps a pipeline's runner and counts the tasks running in every pipeline at once."""

    running = 0
    most_at_once = 0

    def __init__(self, runners: dict[str, FakeRunner], runner: FakeRunner) -> None:
        self._runner = runner
        RunningTogether.running = RunningTogether.most_at_once = 0

    async def __call__(self, task: TaskSpec) -> TaskOutcome:
        cls = RunningTogether
        cls.running += 1
        cls.most_at_once = max(cls.most_at_once, cls.running)
        try:
            await asyncio.sleep(0.01)
            return await self._runner(task)
        finally:
            cls.running -= 1


@asynccontextmanager
async def agent_running(
    scheduler: FakeScheduler,
    runner: FakeRunner,
    options: AgentOptions = OPTIONS,
    *,
    slots: Slots | None = None,
) -> AsyncIterator[tuple[asyncio.Event, asyncio.Event, asyncio.Task[None]]]:
    stopping, now = asyncio.Event(), asyncio.Event()
    agent = Agent(scheduler=scheduler, runner=runner, options=options, slots=slots)
    task = asyncio.create_task(agent.run(stopping=stopping, now=now))
    try:
        yield stopping, now, task
    finally:
        stopping.set()
        now.set()
        await asyncio.gather(task, return_exceptions=True)


async def test_runs_at_most_concurrency_tasks_and_reports_every_one() -> None:
    scheduler = FakeScheduler(queue=[leased(f"t{i}") for i in range(10)])
    runner = FakeRunner()
    async with agent_running(scheduler, runner) as (stopping, _, task):
        await scheduler.until(lambda: len(scheduler.reported()) == 10)
        stopping.set()
        await asyncio.wait_for(task, 10)
    assert runner.most_at_once == 3
    assert max(scheduler.polls) <= 3
    assert {r.result for r in scheduler.reported().values()} == {
        f"done t{i}".encode() for i in range(10)
    }
    assert {r.outcome for r in scheduler.reported().values()} == {worker_pb2.OUTCOME_SUCCEEDED}


async def test_polls_ask_only_for_free_slots() -> None:
    scheduler = FakeScheduler(queue=[leased("a"), leased("b")])
    runner = FakeRunner(hold={"a", "b"})
    async with agent_running(scheduler, runner):
        await scheduler.until(lambda: len(runner.running) == 2 and len(scheduler.polls) >= 3)
        assert set(scheduler.polls[1:]) == {1}  # one slot left while a and b run
        runner.release.set()
        await scheduler.until(lambda: len(scheduler.reported()) == 2)


async def test_running_and_unacknowledged_leases_are_heartbeaten() -> None:
    scheduler = FakeScheduler(queue=[leased("run"), leased("done")], fail_reports=10_000)
    runner = FakeRunner(hold={"run"})
    async with agent_running(scheduler, runner):
        await scheduler.until(
            lambda: any(
                set(beat) == {"lease-run-1", "lease-done-1"} for beat in scheduler.heartbeats
            )
        )
    assert scheduler.reported() == {}


async def test_a_cancelled_verdict_stops_the_task_and_reports_it_cancelled() -> None:
    scheduler = FakeScheduler(queue=[leased("c"), leased("ok")])
    runner = FakeRunner(hold={"c"})
    async with agent_running(scheduler, runner):
        await scheduler.until(lambda: "c" in runner.running)
        scheduler.verdicts["lease-c-1"] = worker_pb2.VERDICT_CANCELLED
        await scheduler.until(lambda: "lease-c-1" in scheduler.reported())
    cancelled = scheduler.reported()["lease-c-1"]
    assert cancelled.outcome == worker_pb2.OUTCOME_CANCELLED
    assert cancelled.error == "cancelled while running"
    assert runner.cancelled == ["c"]
    assert scheduler.reported()["lease-ok-1"].outcome == worker_pb2.OUTCOME_SUCCEEDED


async def test_a_lost_lease_stops_the_task_and_drops_its_result() -> None:
    scheduler = FakeScheduler(queue=[leased("lost"), leased("ok")])
    runner = FakeRunner(hold={"lost"})
    async with agent_running(scheduler, runner):
        await scheduler.until(lambda: "lost" in runner.running)
        scheduler.verdicts["lease-lost-1"] = worker_pb2.VERDICT_LEASE_LOST
        await scheduler.until(lambda: runner.cancelled == ["lost"] and scheduler.reported())
        await asyncio.sleep(0.3)  # a report of it would have gone out by now
    assert list(scheduler.reported()) == ["lease-ok-1"]


async def test_a_lost_lease_drops_a_result_still_waiting_for_its_ack() -> None:
    scheduler = FakeScheduler(queue=[leased("t")], fail_reports=10_000)
    runner = FakeRunner()
    async with agent_running(scheduler, runner):
        await scheduler.until(lambda: scheduler.report_attempts >= 1)
        before = len(scheduler.heartbeats)
        scheduler.verdicts["lease-t-1"] = worker_pb2.VERDICT_LEASE_LOST
        await scheduler.until(lambda: any("lease-t-1" in b for b in scheduler.heartbeats[before:]))
        beats = len(scheduler.heartbeats)
        await asyncio.sleep(0.5)  # several heartbeat periods
    # once dropped, the lease is no longer heartbeaten
    assert all("lease-t-1" not in beat for beat in scheduler.heartbeats[beats:])


async def test_a_runner_bug_fails_the_task_not_the_agent() -> None:
    scheduler = FakeScheduler(queue=[leased("bad"), leased("good")])
    runner = FakeRunner(crash={"bad"})
    async with agent_running(scheduler, runner):
        await scheduler.until(lambda: len(scheduler.reported()) == 2)
    bad = scheduler.reported()["lease-bad-1"]
    assert bad.outcome == worker_pb2.OUTCOME_FAILED
    assert bad.error == "the worker failed to run the task: RuntimeError: disk full"
    assert not bad.non_retryable  # a bug of ours may pass on another worker


async def test_a_failure_the_runner_calls_final_is_reported_non_retryable() -> None:
    scheduler = FakeScheduler(queue=[leased("final")])
    runner = FakeRunner(final={"final"})
    async with agent_running(scheduler, runner):
        await scheduler.until(lambda: len(scheduler.reported()) == 1)
    reported = scheduler.reported()["lease-final-1"]
    assert reported.outcome == worker_pb2.OUTCOME_FAILED and reported.non_retryable


async def test_stopping_ends_polling_and_finishes_running_tasks_within_the_grace() -> None:
    scheduler = FakeScheduler(queue=[leased(f"t{i}") for i in range(5)])
    runner = FakeRunner(hold={"t0", "t1", "t2"})
    async with agent_running(scheduler, runner) as (stopping, _, task):
        await scheduler.until(lambda: len(runner.running) == 3)
        stopping.set()
        await asyncio.sleep(0.1)
        polls = len(scheduler.polls)
        assert not task.done()  # waiting for its tasks
        runner.release.set()
        await asyncio.wait_for(task, 10)
    assert len(scheduler.polls) == polls
    assert set(scheduler.reported()) == {"lease-t0-1", "lease-t1-1", "lease-t2-1"}
    assert [t.task_id for t in scheduler.queue] == ["t3", "t4"]  # never taken


async def test_tasks_unfinished_after_the_grace_are_abandoned_without_a_report() -> None:
    scheduler = FakeScheduler(queue=[leased("slow"), leased("quick")])
    runner = FakeRunner(hold={"slow"})
    options = AgentOptions(concurrency=2, grace_s=0.3, poll_wait_ms=100, report_linger_s=0)
    async with agent_running(scheduler, runner, options) as (stopping, _, task):
        await scheduler.until(lambda: "lease-quick-1" in scheduler.reported())
        stopping.set()
        await asyncio.wait_for(task, 10)
    assert runner.cancelled == ["slow"]
    assert list(scheduler.reported()) == ["lease-quick-1"]


async def test_a_second_signal_abandons_at_once() -> None:
    scheduler = FakeScheduler(queue=[leased("slow")])
    runner = FakeRunner(hold={"slow"})
    options = AgentOptions(concurrency=1, grace_s=300, poll_wait_ms=100)
    async with agent_running(scheduler, runner, options) as (stopping, now, task):
        await scheduler.until(lambda: "slow" in runner.running)
        stopping.set()
        now.set()
        await asyncio.wait_for(task, 10)
    assert runner.cancelled == ["slow"] and scheduler.reported() == {}


async def test_a_rejected_poll_ends_the_agent_after_its_tasks_are_reported() -> None:
    scheduler = FakeScheduler(queue=[leased("t")])
    runner = FakeRunner(hold={"t"})
    async with agent_running(scheduler, runner) as (_, _, task):
        await scheduler.until(lambda: "t" in runner.running)
        scheduler.fail_polls = True
        await asyncio.sleep(0.1)
        runner.release.set()
        with pytest.raises(WorkerRejected, match="UNAUTHENTICATED"):
            await asyncio.wait_for(task, 10)
    assert list(scheduler.reported()) == ["lease-t-1"]


def test_every_executor_of_the_definition_needs_an_address() -> None:
    definition = PipelineDefinition.model_validate(
        {
            "pipeline": [
                {"executor": "wget", "commands": ["x"]},
                {"executor": "ocr", "commands": ["y"]},
            ]
        }
    )
    check_executors(definition, {"wget": "unix:///a", "ocr": "127.0.0.1:1"})
    with pytest.raises(DefinitionError, match=r"executor\(s\) ocr have no address .*names: wget"):
        check_executors(definition, {"wget": "unix:///a"})


async def test_pipelines_sharing_slots_never_run_more_than_the_capacity() -> None:
    """Two pipelines' agents on three shared slots: at most three tasks at once in all,
    and every task of both is run and reported to its own pipeline."""
    busy = FakeScheduler(queue=[leased(f"busy{i}") for i in range(12)])
    other = FakeScheduler(queue=[leased(f"other{i}") for i in range(6)])
    runners = {"busy": FakeRunner(), "other": FakeRunner()}
    slots = Slots(3)
    stopping = asyncio.Event()
    running = [
        asyncio.create_task(
            Agent(
                scheduler=scheduler,
                runner=RunningTogether(runners, runner),
                options=OPTIONS,
                slots=slots,
            ).run(stopping=stopping)
        )
        for scheduler, runner in ((busy, runners["busy"]), (other, runners["other"]))
    ]
    await busy.until(lambda: len(busy.reported()) == 12)
    await other.until(lambda: len(other.reported()) == 6)
    stopping.set()
    await asyncio.wait_for(asyncio.gather(*running), 10)
    assert RunningTogether.most_at_once <= 3
    assert RunningTogether.most_at_once >= 2  # they did share: not one after the other
    assert max(busy.polls + other.polls) <= 3
    assert {r.result for r in busy.reported().values()} == {
        f"done busy{i}".encode() for i in range(12)
    }
    assert slots.free == 3


async def test_an_idle_pipeline_holds_one_shared_slot_not_all() -> None:
    """With nothing to do, a pipeline's poll holds a single slot: the busy one runs on
    the rest."""
    busy = FakeScheduler(queue=[leased("a"), leased("b"), leased("c"), leased("d")])
    idle = FakeScheduler()
    runner = FakeRunner(hold={"a", "b", "c", "d"})
    slots = Slots(4)
    async with agent_running(idle, FakeRunner(), OPTIONS, slots=slots):
        await idle.until(lambda: len(idle.polls) >= 2)
        async with agent_running(busy, runner, OPTIONS, slots=slots):
            await busy.until(lambda: len(runner.running) == 3)
            joined = len(idle.polls)
            await idle.until(lambda: len(idle.polls) >= joined + 2)
            assert set(idle.polls[joined:]) == {1}
            await asyncio.sleep(0.1)
            assert len(runner.running) == 3  # the fourth slot is the idle pipeline's poll
            runner.release.set()
            await busy.until(lambda: len(busy.reported()) == 4)


def test_slots_alone_ask_for_all_and_shared_idle_for_one() -> None:
    slots = Slots(8)
    slots.join()
    assert slots.ask(found_tasks=False) == 8 and slots.long_poll(8)
    slots.join()
    assert (slots.ask(found_tasks=False), slots.ask(found_tasks=True)) == (1, 8)
    # shared, a poll holding several slots takes only what is ready
    assert slots.long_poll(1) and not slots.long_poll(2)


async def test_a_busy_poll_gathers_free_slots_for_a_moment() -> None:
    slots, stopping = Slots(8), asyncio.Event()
    assert await slots.take(8, stopping) == 8
    slots.give(1)
    # Fewer than ``gather`` free: it waits for more, and takes them together.
    taking = asyncio.create_task(slots.take(8, stopping, gather=3, linger_s=5.0))
    await asyncio.sleep(0.01)
    assert not taking.done()
    slots.give(2)
    assert await asyncio.wait_for(taking, 1.0) == 3
    # ... but no longer than the linger: then it takes what is free.
    slots.give(1)
    started = asyncio.get_running_loop().time()
    assert await slots.take(8, stopping, gather=3, linger_s=0.05) == 1
    assert asyncio.get_running_loop().time() - started >= 0.04


async def test_a_busy_agent_polls_for_several_tasks_at_once() -> None:
    scheduler = FakeScheduler(queue=[leased(f"t{i}") for i in range(40)])
    runner = FakeRunner()
    options = AgentOptions(
        concurrency=8, grace_s=5.0, poll_wait_ms=100, poll_linger_s=0.05, report_linger_s=0.005
    )
    async with agent_running(scheduler, runner, options):
        await scheduler.until(lambda: len(scheduler.reported()) == 40)
    busy = [asked for asked in scheduler.polls[1:] if asked]
    assert busy and min(busy) >= 2, scheduler.polls  # a quarter of 8, not one at a time

"""Results go out in batches and are kept until the scheduler acknowledged them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from protos.wsched.v1 import worker_pb2
from services.worker.reporter import Reporter
from tests.unit.services.worker.fakes import FakeScheduler


def result(token: str, payload: bytes = b"ok") -> worker_pb2.TaskResult:
    return worker_pb2.TaskResult(
        lease_token=token, outcome=worker_pb2.OUTCOME_SUCCEEDED, result=payload
    )


@pytest.fixture
def scheduler() -> FakeScheduler:
    return FakeScheduler()


async def running(reporter: Reporter) -> AsyncIterator[Reporter]:
    task = asyncio.create_task(reporter.run())
    try:
        yield reporter
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.fixture
async def reporter(scheduler: FakeScheduler) -> AsyncIterator[Reporter]:
    async for started in running(Reporter(scheduler=scheduler, linger_s=0.05, retry_s=0.01)):
        yield started


async def test_results_finished_together_go_in_one_report(
    reporter: Reporter, scheduler: FakeScheduler
) -> None:
    for i in range(5):
        reporter.add(result(f"l{i}"))
    assert await reporter.flush(5)
    assert [[r.lease_token for r in batch] for batch in scheduler.reports] == [
        ["l0", "l1", "l2", "l3", "l4"]
    ]


async def test_batches_are_bounded_by_count_and_bytes(scheduler: FakeScheduler) -> None:
    small = Reporter(scheduler=scheduler, linger_s=0, max_batch=3, max_batch_bytes=1500)
    for i in range(5):
        small.add(result(f"n{i}"))
    for i in range(3):
        small.add(result(f"big{i}", b"x" * 1000))
    async for _ in running(small):
        assert await small.flush(5)
    assert [len(batch) for batch in scheduler.reports] == [3, 3, 1, 1]
    assert len(scheduler.reported()) == 8


async def test_a_failed_report_is_kept_and_sent_again(
    reporter: Reporter, scheduler: FakeScheduler
) -> None:
    scheduler.fail_reports = 2
    reporter.add(result("l1"))
    assert await reporter.flush(5)
    assert scheduler.report_attempts == 3
    assert list(scheduler.reported()) == ["l1"]


@pytest.mark.parametrize(
    "ack",
    [
        worker_pb2.ACK_ACCEPTED,
        worker_pb2.ACK_DUPLICATE,
        worker_pb2.ACK_STALE,
        worker_pb2.ACK_REJECTED,
    ],
)
async def test_every_ack_ends_the_wait_for_that_result(
    reporter: Reporter, scheduler: FakeScheduler, ack: worker_pb2.Ack.ValueType
) -> None:
    scheduler.acks["l1"] = ack
    reporter.add(result("l1"))
    assert await reporter.flush(5)
    assert reporter.pending_tokens() == []
    assert scheduler.report_attempts == 1


async def test_a_result_without_an_ack_is_sent_again(scheduler: FakeScheduler) -> None:
    class Forgetful(FakeScheduler):
        async def report(self, results: object) -> worker_pb2.ReportResponse:
            answer = await super().report(results)  # type: ignore[arg-type]
            if self.report_attempts == 1:
                del answer.acks[:]  # the first answer leaves every result out
            return answer

    forgetful = Forgetful()
    async for reporter in running(Reporter(scheduler=forgetful, linger_s=0)):
        reporter.add(result("l1"))
        assert await reporter.flush(5)
    assert forgetful.report_attempts == 2


async def test_dropped_results_are_not_sent(scheduler: FakeScheduler) -> None:
    reporter = Reporter(scheduler=scheduler, linger_s=0)
    reporter.add(result("keep"))
    reporter.add(result("lost"))
    assert reporter.drop("lost") and not reporter.drop("never-added")
    assert reporter.pending_tokens() == ["keep"]
    async for _ in running(reporter):
        assert await reporter.flush(5)
    assert list(scheduler.reported()) == ["keep"]


async def test_flush_gives_up_after_its_time(scheduler: FakeScheduler) -> None:
    scheduler.fail_reports = 10_000
    async for reporter in running(Reporter(scheduler=scheduler, linger_s=0, retry_s=0.01)):
        reporter.add(result("l1"))
        assert not await reporter.flush(0.1)
        assert reporter.pending_tokens() == ["l1"]

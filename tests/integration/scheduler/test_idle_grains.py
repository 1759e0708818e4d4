"""Idle pipelines on a real replica (Kafka, TiDB): a grain with nothing to do deactivates,
standing workers' polls wait at the replica without activating it, and the next record
activates it and hands the parked poll its task."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from actors.pipeline.actor import Timing
from protos.wsched.v1 import worker_pb2
from services.scheduler.host import SchedulerHost
from tests.integration.scheduler.conftest import (
    ReadyPipeline,
    Submit,
    settings_for,
    stub,
    wait_hosted,
)

pytestmark = pytest.mark.integration

#: Fast paces, so that a grain is idle within seconds.
TIMING = Timing(idle_after_s=0.5, idle_tick_s=0.5)


@pytest.fixture
async def idle_host(
    kafka_bootstrap: str, tidb_url: str, kafka_group: str
) -> AsyncIterator[SchedulerHost]:
    settings = settings_for(kafka_bootstrap, tidb_url, kafka_group).model_copy(
        update={"grain_idle_timeout_s": 1.0}
    )
    async with SchedulerHost(settings=settings, rescan_s=1, timing=TIMING) as running:
        yield running


def active(host: SchedulerHost, pipeline: ReadyPipeline) -> bool:
    return host.grain_active(pipeline.id)


async def until_inactive(host: SchedulerHost, pipeline: ReadyPipeline) -> None:
    async with asyncio.timeout(30):
        while active(host, pipeline):
            await asyncio.sleep(0.1)


async def test_an_idle_grain_deactivates_and_a_record_wakes_it_for_a_parked_poll(
    idle_host: SchedulerHost, pipeline: ReadyPipeline, submit: Submit
) -> None:
    host = idle_host
    await wait_hosted(host, pipeline.id)
    await until_inactive(host, pipeline)
    assert pipeline.id in host.hosted_pipelines()  # still read and served
    channel, worker = stub(host)
    auth = (("authorization", f"Bearer {pipeline.token}"),)
    request = worker_pb2.PollRequest(pipeline_id=pipeline.id, worker="w", max_tasks=5, wait_ms=1500)
    async with channel:
        # A standing worker's long polls end empty and leave the grain inactive.
        for _ in range(2):
            reply = await worker.Poll(request, metadata=auth)
            assert list(reply.tasks) == [] and not active(host, pipeline)
        # A poll parked at the replica gets the task a record brings.
        long_poll = worker_pb2.PollRequest(
            pipeline_id=pipeline.id, worker="w", max_tasks=5, wait_ms=20_000
        )
        parked = asyncio.ensure_future(worker.Poll(long_poll, metadata=auth))
        await asyncio.sleep(0.5)
        assert not parked.done() and not active(host, pipeline)
        await submit(pipeline, {"wake-1": {"n": 1}})
        reply = await asyncio.wait_for(parked, 20)
        assert [t.task_id for t in reply.tasks] == ["wake-1"]
        assert active(host, pipeline)
        report = await worker.Report(
            worker_pb2.ReportRequest(
                pipeline_id=pipeline.id,
                worker="w",
                results=[
                    worker_pb2.TaskResult(
                        lease_token=reply.tasks[0].lease_token,
                        outcome=worker_pb2.OUTCOME_SUCCEEDED,
                    )
                ],
            ),
            metadata=auth,
        )
        assert [a.ack for a in report.acks] == [worker_pb2.ACK_ACCEPTED]
    # Done, the grain goes idle again; a second record wakes it again, nothing lost.
    await until_inactive(host, pipeline)
    await submit(pipeline, {"wake-2": {"n": 2}})
    channel, worker = stub(host)
    async with channel, asyncio.timeout(30):
        got: list[str] = []
        while not got:
            reply = await worker.Poll(request, metadata=auth)
            got = [t.task_id for t in reply.tasks]
    assert got == ["wake-2"]

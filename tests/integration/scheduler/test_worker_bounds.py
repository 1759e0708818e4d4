"""Over-long worker input on real TiDB through the real gRPC server: refused up front, so
the pipeline's grain keeps serving the other workers and nothing is lost."""

from __future__ import annotations

import asyncio

import grpc
import pytest
import sqlalchemy as sa

from protos.wsched.v1 import worker_pb2
from services.scheduler.host import SchedulerHost
from services.store.schema import tasks
from tests.integration.scheduler.conftest import ReadyPipeline, Submit, stub, wait_hosted

pytestmark = pytest.mark.integration


async def test_an_over_long_worker_name_is_refused_and_the_grain_serves_on(
    host: SchedulerHost, pipeline: ReadyPipeline, submit: Submit, engine: sa.Engine
) -> None:
    await wait_hosted(host, pipeline.id)
    items = {f"task-{i}": {"n": i} for i in range(3)}
    await submit(pipeline, items)
    channel, worker = stub(host)
    auth = (("authorization", f"Bearer {pipeline.token}"),)

    def poll(name: str) -> worker_pb2.PollRequest:
        return worker_pb2.PollRequest(
            pipeline_id=pipeline.id, worker=name, max_tasks=10, wait_ms=2000
        )

    async with channel, asyncio.timeout(60):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await worker.Poll(poll("w" * 100_000), metadata=auth)
        got: dict[str, worker_pb2.LeasedTask] = {}
        while len(got) < len(items):
            reply = await worker.Poll(poll("w1"), metadata=auth)
            got.update({task.task_id: task for task in reply.tasks})
        report = await worker.Report(
            worker_pb2.ReportRequest(
                pipeline_id=pipeline.id,
                worker="w1",
                results=[
                    worker_pb2.TaskResult(
                        lease_token=task.lease_token,
                        outcome=worker_pb2.OUTCOME_SUCCEEDED,
                        result=task.data,
                    )
                    for task in got.values()
                ],
            ),
            metadata=auth,
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "worker" in (refused.value.details() or "")
    assert "255" in (refused.value.details() or "")
    assert [ack.ack for ack in report.acks] == [worker_pb2.ACK_ACCEPTED] * len(items)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(tasks.c.id, tasks.c.status, tasks.c.worker, tasks.c.attempt).where(
                tasks.c.pipeline_id == pipeline.id
            )
        ).all()
        results = conn.execute(
            sa.select(sa.func.count())
            .select_from(tasks)
            .where(tasks.c.pipeline_id == pipeline.id, tasks.c.result.is_not(None))
        ).scalar()
    assert sorted(tuple(row) for row in rows) == [
        (task_id, "succeeded", "w1", 1) for task_id in sorted(items)
    ]
    assert results == len(items)

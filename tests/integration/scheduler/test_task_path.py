"""The scheduler against real Kafka and TiDB: admit, poll, report, status."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import grpc
import httpx
import pytest
import sqlalchemy as sa
from aiokafka import AIOKafkaProducer

from protos.wsched.v1 import worker_pb2
from services.scheduler.host import SchedulerHost
from services.store.schema import grain_offsets, quarantine, tasks
from tests.integration.scheduler.conftest import ReadyPipeline, Submit, stub, wait_hosted

pytestmark = pytest.mark.integration


async def test_submitted_tasks_are_polled_reported_and_stored(
    host: SchedulerHost, pipeline: ReadyPipeline, submit: Submit, engine: sa.Engine
) -> None:
    await wait_hosted(host, pipeline.id)
    items: dict[str, dict[str, object]] = {f"task-{i:03d}": {"n": i} for i in range(40)}
    await submit(pipeline, items)
    channel, worker = stub(host)
    auth = (("authorization", f"Bearer {pipeline.token}"),)
    got: dict[str, worker_pb2.LeasedTask] = {}
    async with channel, asyncio.timeout(60):
        while len(got) < len(items):
            reply = await worker.Poll(
                worker_pb2.PollRequest(
                    pipeline_id=pipeline.id, worker="w1", max_tasks=15, wait_ms=2000
                ),
                metadata=auth,
            )
            got.update({task.task_id: task for task in reply.tasks})
        assert reply.lease_timeout_ms == 5000
        report = await worker.Report(
            worker_pb2.ReportRequest(
                pipeline_id=pipeline.id,
                worker="w1",
                results=[
                    worker_pb2.TaskResult(
                        lease_token=t.lease_token,
                        outcome=worker_pb2.OUTCOME_SUCCEEDED,
                        result=t.data,
                    )
                    for t in got.values()
                ],
            ),
            metadata=auth,
        )
    assert {ack.ack for ack in report.acks} == {worker_pb2.ACK_ACCEPTED}
    assert {json.loads(t.data)["n"] for t in got.values()} == set(range(40))
    # acknowledged means durable: the rows are there right now
    with engine.connect() as conn:
        statuses = conn.execute(
            sa.select(tasks.c.status, sa.func.count())
            .where(tasks.c.pipeline_id == pipeline.id)
            .group_by(tasks.c.status)
        ).all()
        results = conn.execute(
            sa.select(sa.func.count())
            .select_from(tasks)
            .where(tasks.c.pipeline_id == pipeline.id, tasks.c.result.is_not(None))
        ).scalar()
        offsets = conn.execute(sa.select(sa.func.sum(grain_offsets.c.next_offset))).scalar()
    assert [tuple(row) for row in statuses] == [("succeeded", 40)]
    assert results == 40 and offsets == 40
    await assert_metrics(host, pipeline.id)


async def assert_metrics(host: SchedulerHost, pipeline_id: str) -> None:
    async with httpx.AsyncClient() as client:
        ready = await client.get(f"http://127.0.0.1:{host.metrics_port}/readyz")
        text = (await client.get(f"http://127.0.0.1:{host.metrics_port}/metrics")).text
    assert ready.status_code == 200
    for line in (
        f'wsched_tasks_total{{event="admitted",pipeline="{pipeline_id}"}} 40.0',
        f'wsched_tasks_total{{event="succeeded",pipeline="{pipeline_id}"}} 40.0',
        f'wsched_pipeline_backlog{{pipeline="{pipeline_id}"}} 0.0',
        'wsched_active_grains{kind="pipeline"} 1.0',
    ):
        assert line in text, f"{line!r} not in /metrics:\n{text}"
    assert "wsched_flush_seconds_count" in text


async def test_workers_need_their_pipeline_token(
    host: SchedulerHost, pipeline: ReadyPipeline
) -> None:
    await wait_hosted(host, pipeline.id)
    channel, worker = stub(host)
    async with channel:
        for metadata in ((), (("authorization", "Bearer wst_wrong"),)):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await worker.Poll(
                    worker_pb2.PollRequest(pipeline_id=pipeline.id, wait_ms=0), metadata=metadata
                )
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_stale_report_does_not_touch_the_newer_attempt(
    host: SchedulerHost, pipeline: ReadyPipeline, submit: Submit, engine: sa.Engine
) -> None:
    await wait_hosted(host, pipeline.id)
    await submit(pipeline, {"only": {"x": 1}})
    channel, worker = stub(host)
    auth = (("authorization", f"Bearer {pipeline.token}"),)

    async def poll_one() -> Any:
        reply = await worker.Poll(
            worker_pb2.PollRequest(
                pipeline_id=pipeline.id, worker=str(uuid.uuid4()), max_tasks=1, wait_ms=10_000
            ),
            metadata=auth,
        )
        assert len(reply.tasks) == 1
        return reply.tasks[0]

    async with channel:
        first = await poll_one()
        second = await poll_one()  # the first lease (5 s) expired: attempt 2
        assert second.attempt == 2 and second.lease_token != first.lease_token
        late = await worker.Report(
            worker_pb2.ReportRequest(
                pipeline_id=pipeline.id,
                results=[
                    worker_pb2.TaskResult(
                        lease_token=first.lease_token,
                        outcome=worker_pb2.OUTCOME_FAILED,
                        error="late",
                    )
                ],
            ),
            metadata=auth,
        )
        beat = await worker.Heartbeat(
            worker_pb2.HeartbeatRequest(
                pipeline_id=pipeline.id, lease_tokens=[first.lease_token, second.lease_token]
            ),
            metadata=auth,
        )
        done = await worker.Report(
            worker_pb2.ReportRequest(
                pipeline_id=pipeline.id,
                results=[
                    worker_pb2.TaskResult(
                        lease_token=second.lease_token,
                        outcome=worker_pb2.OUTCOME_SUCCEEDED,
                        result=b"ok",
                    )
                ],
            ),
            metadata=auth,
        )
    assert late.acks[0].ack == worker_pb2.ACK_STALE
    assert [v.verdict for v in beat.verdicts] == [
        worker_pb2.VERDICT_LEASE_LOST,
        worker_pb2.VERDICT_OK,
    ]
    assert done.acks[0].ack == worker_pb2.ACK_ACCEPTED
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(tasks.c.status, tasks.c.attempt).where(tasks.c.pipeline_id == pipeline.id)
        ).one()
    assert tuple(row) == ("succeeded", 2)


async def test_undecodable_records_are_quarantined_and_skipped(
    host: SchedulerHost,
    pipeline: ReadyPipeline,
    submit: Submit,
    engine: sa.Engine,
    kafka_bootstrap: str,
) -> None:
    await wait_hosted(host, pipeline.id)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(
            pipeline.topic, b"\x00not a protobuf\xff", key=b"bad", partition=0
        )
    finally:
        await producer.stop()
    await submit(pipeline, {"good": {"ok": True}})
    channel, worker = stub(host)
    auth = (("authorization", f"Bearer {pipeline.token}"),)
    async with channel, asyncio.timeout(30):
        reply = await worker.Poll(
            worker_pb2.PollRequest(
                pipeline_id=pipeline.id, worker="w", max_tasks=5, wait_ms=10_000
            ),
            metadata=auth,
        )
    assert [t.task_id for t in reply.tasks] == ["good"]
    with engine.connect() as conn:
        kept = conn.execute(
            sa.select(quarantine.c.topic_partition, quarantine.c.raw, quarantine.c.reason).where(
                quarantine.c.pipeline_id == pipeline.id
            )
        ).all()
    assert len(kept) == 1 and kept[0].raw == b"\x00not a protobuf\xff"
    assert kept[0].topic_partition == 0 and "TaskEvent" in kept[0].reason

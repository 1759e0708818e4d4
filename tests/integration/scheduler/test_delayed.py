"""Delayed tasks on real Kafka and TiDB: scheduled until due, then handed out on time;
future tasks never hold back ready ones; a cancel ends a scheduled task; timers outlive
their grain's owner."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from protos.wsched.v1 import worker_pb2, worker_pb2_grpc
from services.kafka.producer import KafkaProducer, OutgoingTask
from services.placement import Route
from services.scheduler.host import SchedulerHost
from services.store.schema import task_timers, tasks
from tests.integration.scheduler.conftest import ReadyPipeline, settings_for, stub, wait_hosted

pytestmark = pytest.mark.integration


def task(task_id: str, *, due_in_s: float = 0, expires_in_s: float = 0) -> OutgoingTask:
    raw = json.dumps({"id": task_id}).encode()
    due_ms = int((time.time() + due_in_s) * 1000) if due_in_s else 0
    expires_ms = int((time.time() + expires_in_s) * 1000) if expires_in_s else 0
    return OutgoingTask(
        id=task_id,
        data=raw,
        data_sha256=hashlib.sha256(raw).digest(),
        due_at_ms=due_ms,
        expires_at_ms=expires_ms,
    )


async def poll(
    worker: worker_pb2_grpc.WorkerStub, pipeline: ReadyPipeline, *, wait_ms: int = 5000
) -> list[worker_pb2.LeasedTask]:
    reply = await worker.Poll(
        worker_pb2.PollRequest(
            pipeline_id=pipeline.id, worker="w1", max_tasks=100, wait_ms=wait_ms
        ),
        metadata=(("authorization", f"Bearer {pipeline.token}"),),
    )
    return list(reply.tasks)


def statuses(engine: sa.Engine, pipeline_id: str) -> dict[str, str]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(tasks.c.id, tasks.c.status).where(tasks.c.pipeline_id == pipeline_id)
        ).all()
    return {row.id: row.status for row in rows}


async def wait_for(check: Callable[[], bool], timeout_s: float = 30) -> None:
    async with asyncio.timeout(timeout_s):
        while not check():
            await asyncio.sleep(0.05)


async def test_a_delayed_task_is_scheduled_then_handed_out_within_a_second_of_due(
    host: SchedulerHost, pipeline: ReadyPipeline, producer: KafkaProducer, engine: sa.Engine
) -> None:
    await wait_hosted(host, pipeline.id)
    submitted = time.time()
    await producer.submit(Route(pipeline.id), [task("later", due_in_s=3), task("now")])
    due = submitted + 3
    channel, worker = stub(host)
    async with channel:
        first = await poll(worker, pipeline)
        assert [t.task_id for t in first] == ["now"]  # the future task does not hold it back
        await wait_for(lambda: statuses(engine, pipeline.id).get("later") == "scheduled")
        with engine.connect() as conn:
            timers = (
                conn.execute(
                    sa.select(task_timers.c.task_id).where(task_timers.c.pipeline_id == pipeline.id)
                )
                .scalars()
                .all()
            )
        assert timers == ["later"]
        got: list[worker_pb2.LeasedTask] = []
        while not got:
            got = await poll(worker, pipeline, wait_ms=1000)
        handed_out = time.time()
    assert [t.task_id for t in got] == ["later"]
    assert due - 0.05 <= handed_out <= due + 1.0, f"{handed_out - due:+.3f} s from due"

    def timer_rows() -> int:
        with engine.connect() as conn:
            return int(
                conn.execute(
                    sa.select(sa.func.count())
                    .select_from(task_timers)
                    .where(task_timers.c.pipeline_id == pipeline.id)
                ).scalar_one()
            )

    # The timer fired in memory; the flush that writes the lease ends its row.
    await wait_for(lambda: statuses(engine, pipeline.id).get("later") == "leased")
    assert timer_rows() == 0


async def test_a_cancelled_scheduled_task_never_runs(
    host: SchedulerHost, pipeline: ReadyPipeline, producer: KafkaProducer, engine: sa.Engine
) -> None:
    await wait_hosted(host, pipeline.id)
    await producer.submit(
        Route(pipeline.id), [task("doomed", due_in_s=2), task("kept", due_in_s=2)]
    )
    await wait_for(lambda: len(statuses(engine, pipeline.id)) == 2)
    await producer.cancel(Route(pipeline.id), "doomed", reason="test")
    await wait_for(lambda: statuses(engine, pipeline.id)["doomed"] == "cancelled")
    channel, worker = stub(host)
    async with channel:
        seen: set[str] = set()
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            seen |= {t.task_id for t in await poll(worker, pipeline, wait_ms=500)}
    assert seen == {"kept"}


async def test_timers_outlive_their_owner(
    kafka_bootstrap: str,
    tidb_url: str,
    kafka_group: str,
    pipeline: ReadyPipeline,
    producer: KafkaProducer,
    engine: sa.Engine,
) -> None:
    settings = settings_for(kafka_bootstrap, tidb_url, kafka_group)
    async with SchedulerHost(settings=settings, rescan_s=1) as first:
        await wait_hosted(first, pipeline.id)
        await producer.submit(Route(pipeline.id), [task(f"t{i}", due_in_s=4) for i in range(20)])
        await wait_for(lambda: len(statuses(engine, pipeline.id)) == 20)
    # The first owner is gone before any timer was due; a new one takes the grain over.
    async with SchedulerHost(settings=settings, rescan_s=1) as second:
        await wait_hosted(second, pipeline.id)
        channel, worker = stub(second)
        got: set[str] = set()
        async with channel, asyncio.timeout(30):
            while len(got) < 20:
                got |= {t.task_id for t in await poll(worker, pipeline, wait_ms=1000)}
    assert got == {f"t{i}" for i in range(20)}


async def test_bad_due_time_records_are_not_a_reason_to_stop(
    host: SchedulerHost, pipeline: ReadyPipeline, producer: KafkaProducer
) -> None:
    """A due time far in the past (a replay, a skewed clock) runs now."""
    await wait_hosted(host, pipeline.id)
    raw = b'{"old":1}'
    old = OutgoingTask(id="old", data=raw, data_sha256=hashlib.sha256(raw).digest(), due_at_ms=1000)
    await producer.submit(Route(pipeline.id), [old])
    channel, worker = stub(host)
    async with channel:
        got = await poll(worker, pipeline)
    assert [t.task_id for t in got] == ["old"]


async def test_a_task_not_started_by_its_deadline_expires_and_never_runs(
    host: SchedulerHost, pipeline: ReadyPipeline, producer: KafkaProducer, engine: sa.Engine
) -> None:
    await wait_hosted(host, pipeline.id)
    await producer.submit(
        Route(pipeline.id),
        [
            task("late", expires_in_s=1),  # nobody polls within its second
            task("waits", due_in_s=2, expires_in_s=3),  # due, then nobody polls in time
            task("fine", expires_in_s=60),
        ],
    )
    await wait_for(lambda: statuses(engine, pipeline.id).get("late") == "expired")
    await wait_for(lambda: statuses(engine, pipeline.id).get("waits") == "expired")
    channel, worker = stub(host)
    async with channel:
        got = await poll(worker, pipeline)
    assert [t.task_id for t in got] == ["fine"]
    with engine.connect() as conn:
        error = conn.execute(
            sa.select(tasks.c.error).where(tasks.c.pipeline_id == pipeline.id, tasks.c.id == "late")
        ).scalar()
    assert "deadline" in (error or "")

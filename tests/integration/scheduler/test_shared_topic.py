"""Pipelines on the shared topic, on a real replica (Kafka, TiDB): each shard's partition
feeds the grains of its pipelines, each pipeline gets exactly its own tasks, the shard's
offset is stored fenced by the shard, a new replica resumes from it, and workers are sent
to the shard's owner."""

from __future__ import annotations

import asyncio

import grpc
import pytest
import sqlalchemy as sa
from aiokafka import AIOKafkaConsumer, TopicPartition

from protos.wsched.v1 import worker_pb2
from services.placement import SHARED_TOPIC
from services.scheduler.host import SchedulerHost
from services.scheduler.worker_api import OWNER_KEY
from services.store.schema import grain_offsets, grain_owners, tasks
from tests.integration.scheduler.conftest import (
    ReadyPipeline,
    Submit,
    create_ready_pipeline,
    settings_for,
    stub,
    wait_hosted,
)

pytestmark = pytest.mark.integration

SHARD = 5


async def poll_all(host: SchedulerHost, pipeline: ReadyPipeline, want: int) -> list[str]:
    """Lease tasks of ``pipeline`` until ``want`` came (each acknowledged as done)."""
    channel, worker = stub(host)
    auth = (("authorization", f"Bearer {pipeline.token}"),)
    got: list[str] = []
    async with channel, asyncio.timeout(60):
        while len(got) < want:
            reply = await worker.Poll(
                worker_pb2.PollRequest(
                    pipeline_id=pipeline.id, worker="w", max_tasks=50, wait_ms=1000
                ),
                metadata=auth,
            )
            got += [t.task_id for t in reply.tasks]
            if reply.tasks:
                await worker.Report(
                    worker_pb2.ReportRequest(
                        pipeline_id=pipeline.id,
                        worker="w",
                        results=[
                            worker_pb2.TaskResult(
                                lease_token=t.lease_token, outcome=worker_pb2.OUTCOME_SUCCEEDED
                            )
                            for t in reply.tasks
                        ],
                    ),
                    metadata=auth,
                )
    return got


def stored_offset(engine: sa.Engine, shard: int) -> int | None:
    with engine.connect() as conn:
        value = conn.execute(
            sa.select(grain_offsets.c.next_offset).where(
                grain_offsets.c.grain_id == f"shard:{shard}",
                grain_offsets.c.topic_partition == shard,
            )
        ).scalar()
    return None if value is None else int(value)


async def shared_end(kafka_bootstrap: str, shard: int) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap)
    await consumer.start()
    try:
        tp = TopicPartition(SHARED_TOPIC, shard)
        return int((await consumer.end_offsets([tp]))[tp])
    finally:
        await consumer.stop()


async def until_stored(engine: sa.Engine, shard: int, offset: int) -> None:
    async with asyncio.timeout(30):
        while stored_offset(engine, shard) != offset:
            await asyncio.sleep(0.1)


def task_rows(engine: sa.Engine, pipeline: ReadyPipeline) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                sa.select(sa.func.count()).where(tasks.c.pipeline_id == pipeline.id)
            ).scalar_one()
        )


async def test_pipelines_of_one_shard_share_its_partition_and_each_gets_its_own(
    engine: sa.Engine,
    kafka_bootstrap: str,
    tidb_url: str,
    kafka_group: str,
    submit: Submit,
) -> None:
    one = await create_ready_pipeline(engine, kafka_bootstrap, shard=SHARD, shared=True)
    two = await create_ready_pipeline(engine, kafka_bootstrap, shard=SHARD, shared=True)
    other = await create_ready_pipeline(engine, kafka_bootstrap, shard=SHARD + 1, shared=True)
    settings = settings_for(kafka_bootstrap, tidb_url, kafka_group)
    async with SchedulerHost(settings=settings, rescan_s=1) as host:
        for p in (one, two, other):
            await wait_hosted(host, p.id)
        await submit(one, {f"one-{i}": {"i": i} for i in range(20)})
        await submit(two, {f"two-{i}": {"i": i} for i in range(10)})
        await submit(other, {"other-0": {}})
        assert sorted(await poll_all(host, one, 20)) == sorted(f"one-{i}" for i in range(20))
        assert sorted(await poll_all(host, two, 10)) == sorted(f"two-{i}" for i in range(10))
        assert await poll_all(host, other, 1) == ["other-0"]
        assert set(host.shard_forwarders()) >= {SHARD, SHARD + 1}
        shard = host.shard_forwarders()[SHARD]
        assert shard.pipelines[one.id].admitted == 20
        assert shard.pipelines[two.id].admitted == 10
        # The shard's offset is stored: the end of its partition.
        first = await shared_end(kafka_bootstrap, SHARD)
        await until_stored(engine, SHARD, first)
    # Under the shard's own fencing row.
    with engine.connect() as conn:
        owner = conn.execute(
            sa.select(grain_owners.c.epoch).where(grain_owners.c.grain_id == f"shard:{SHARD}")
        ).scalar()
    assert owner is not None and owner >= 1

    # A new replica resumes from the stored offset: the old records make no new rows, the
    # new ones arrive.
    await submit(one, {"one-late": {}})
    settings = settings_for(kafka_bootstrap, tidb_url, kafka_group)
    async with SchedulerHost(settings=settings, rescan_s=1) as host:
        await wait_hosted(host, one.id)
        assert await poll_all(host, one, 1) == ["one-late"]
        await until_stored(engine, SHARD, first + 1)
        stats = host.shard_forwarders()[SHARD].pipelines[one.id]
        assert (stats.admitted, stats.duplicates) == (1, 0)
    assert task_rows(engine, one) == 21
    assert task_rows(engine, two) == 10


async def test_a_new_owner_activates_only_the_shared_pipelines_with_work(
    engine: sa.Engine,
    kafka_bootstrap: str,
    tidb_url: str,
    kafka_group: str,
    submit: Submit,
) -> None:
    idle = await create_ready_pipeline(engine, kafka_bootstrap, shared=True)
    busy = await create_ready_pipeline(engine, kafka_bootstrap, shared=True)
    async with SchedulerHost(
        settings=settings_for(kafka_bootstrap, tidb_url, kafka_group), rescan_s=1
    ) as host:
        await wait_hosted(host, busy.id)
        await submit(busy, {"waiting": {}})
        async with asyncio.timeout(30):
            while task_rows(engine, busy) < 1:
                await asyncio.sleep(0.1)
    async with SchedulerHost(
        settings=settings_for(kafka_bootstrap, tidb_url, kafka_group), rescan_s=1
    ) as host:
        for p in (idle, busy):
            await wait_hosted(host, p.id)
        # The queued task needs its grain; the empty pipeline is hosted inactive.
        assert host.grain_active(busy.id)
        assert not host.grain_active(idle.id)
        assert await poll_all(host, busy, 1) == ["waiting"]
        # Its first record activates it.
        await submit(idle, {"first": {}})
        assert await poll_all(host, idle, 1) == ["first"]
        assert host.grain_active(idle.id)


async def test_a_worker_asking_the_wrong_replica_is_sent_to_the_shards_owner(
    engine: sa.Engine,
    kafka_bootstrap: str,
    tidb_url: str,
    kafka_group: str,
    submit: Submit,
) -> None:
    """A shared pipeline's grain, last activated on one replica, is hosted inactive by its
    shard's new owner: a worker asking the first replica goes to the new owner, not back
    to the first one (its grain's row still names it)."""
    pipelines = [
        await create_ready_pipeline(engine, kafka_bootstrap, shared=True, shard=shard)
        for shard in (3, 40)
    ]
    first_settings = settings_for(kafka_bootstrap, tidb_url, kafka_group)
    async with SchedulerHost(settings=first_settings, rescan_s=1) as first:
        for p in pipelines:
            await wait_hosted(first, p.id)
            await submit(p, {f"{p.id}-t": {}})
            assert await poll_all(first, p, 1) == [f"{p.id}-t"]  # its grain: the first's
        second_settings = settings_for(kafka_bootstrap, tidb_url, kafka_group)
        async with SchedulerHost(settings=second_settings, rescan_s=1) as second:
            async with asyncio.timeout(60):
                while True:
                    moved = [p for p in pipelines if p.id in second.hosted_pipelines()]
                    if moved and all(p.id not in first.hosted_pipelines() for p in moved):
                        break
                    await asyncio.sleep(0.2)
            pipeline = moved[0]
            assert not second.grain_active(pipeline.id)  # no work: hosted inactive
            channel, worker = stub(first)
            async with channel:
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await worker.Poll(
                        worker_pb2.PollRequest(
                            pipeline_id=pipeline.id, worker="w", max_tasks=1, wait_ms=100
                        ),
                        metadata=(("authorization", f"Bearer {pipeline.token}"),),
                    )
            assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            trailing = dict(refused.value.trailing_metadata() or ())
            assert trailing.get(OWNER_KEY) == second_settings.advertised_grpc()

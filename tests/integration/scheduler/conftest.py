"""A ready pipeline in the store and its topic, without going through the HTTP API; a
scheduler replica on real Kafka and TiDB, and a worker's gRPC stub to it."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest
import sqlalchemy as sa
from aiokafka import AIOKafkaProducer

from protos.wsched.v1 import events_pb2, worker_pb2_grpc
from services.infra.process import free_port
from services.kafka.admin import KafkaTopicAdmin
from services.kafka.producer import KafkaProducer
from services.placement import Route, TopicMode, shard_of
from services.scheduler.host import SchedulerHost
from services.settings import Settings
from services.store import migrate
from tests.fixtures.rows import insert_pipeline

if TYPE_CHECKING:
    from tests.integration.scheduler.cluster import Replica


@dataclass(frozen=True, kw_only=True)
class ReadyPipeline:
    id: str
    token: str
    topic: str
    partitions: int
    name: str = "p"
    #: On the shared topic (its shard's partition, the pipeline header on each record).
    shared: bool = False


@pytest.fixture
def engine(tidb_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(tidb_url)
    migrate.upgrade(engine)
    yield engine
    engine.dispose()


async def create_ready_pipeline(
    engine: sa.Engine,
    kafka_bootstrap: str,
    *,
    shard: int | None = None,
    lease_timeout_s: int = 5,
    partitions: int = 2,
    shared: bool = False,
    **columns: object,
) -> ReadyPipeline:
    """A pipeline row in state ready, and its topic; ``shard`` picks an id on that shard,
    ``shared`` puts it on the shared topic, ``columns`` set more of the row (in the
    insert: a running replica may activate the pipeline's grain as soon as the row
    exists, and a grain reads its settings then)."""
    if shared:
        partitions = 1
    pipeline_id = str(uuid.uuid4())
    while shard is not None and shard_of(pipeline_id) != shard:
        pipeline_id = str(uuid.uuid4())
    token = f"wst_{uuid.uuid4().hex}"
    insert_pipeline(
        engine,
        pipeline_id,
        token=token,
        partitions=partitions,
        topic=TopicMode.SHARED.value if shared else TopicMode.DEDICATED.value,
        lease_timeout_s=lease_timeout_s,
        **columns,
    )
    admin = KafkaTopicAdmin(bootstrap=kafka_bootstrap)
    route = Route(pipeline_id, TopicMode.SHARED if shared else TopicMode.DEDICATED)
    if shared:
        await admin.ensure_shared_topic()
    else:
        await admin.create_pipeline_topic(pipeline_id, partitions)
    return ReadyPipeline(
        id=pipeline_id, token=token, topic=route.topic, partitions=partitions, shared=shared
    )


@pytest.fixture
async def pipeline(engine: sa.Engine, kafka_bootstrap: str) -> ReadyPipeline:
    return await create_ready_pipeline(engine, kafka_bootstrap)


@pytest.fixture
async def submit(kafka_bootstrap: str) -> AsyncIterator[object]:
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap, acks="all", enable_idempotence=True, linger_ms=5
    )
    await producer.start()

    async def send(pipeline: ReadyPipeline, items: Mapping[str, Mapping[str, object]]) -> None:
        futures = []
        for task_id, data in items.items():
            raw = json.dumps(data).encode()
            event = events_pb2.TaskEvent(
                schema_version=1,
                pipeline_id=pipeline.id,
                task_id=task_id,
                produced_at_ms=int(time.time() * 1000),
                submit=events_pb2.SubmitTask(data=raw, data_sha256=hashlib.sha256(raw).digest()),
            )
            route = Route(pipeline.id, TopicMode.SHARED if pipeline.shared else TopicMode.DEDICATED)
            futures.append(
                await producer.send(
                    route.topic,
                    event.SerializeToString(),
                    key=task_id.encode(),
                    partition=route.partition,
                    headers=list(route.headers),
                )
            )
        for future in futures:
            await future

    yield send
    await producer.stop()


Submit = Callable[[ReadyPipeline, Mapping[str, Mapping[str, object]]], Awaitable[None]]


@pytest.fixture
async def producer(kafka_bootstrap: str) -> AsyncIterator[KafkaProducer]:
    """The API's producer: submits, cancels and schedule changes as the API sends them."""
    running = KafkaProducer(bootstrap=kafka_bootstrap)
    await running.start()
    yield running
    await running.stop()


def settings_for(kafka_bootstrap: str, tidb_url: str, group: str) -> Settings:
    port = free_port()
    return Settings(
        kafka_bootstrap=kafka_bootstrap,
        database_url=tidb_url,
        grpc_port=port,
        # Never the default port: another process on the machine may hold it.
        metrics_port=free_port(),
        replica_name=f"replica-{port}",
        placement_group=group,
    )


@pytest.fixture
async def host(
    kafka_bootstrap: str, tidb_url: str, kafka_group: str
) -> AsyncIterator[SchedulerHost]:
    async with SchedulerHost(
        settings=settings_for(kafka_bootstrap, tidb_url, kafka_group), rescan_s=1
    ) as running:
        yield running


async def wait_hosted(host: SchedulerHost, pipeline_id: str, timeout_s: float = 30) -> None:
    async with asyncio.timeout(timeout_s):
        while pipeline_id not in host.hosted_pipelines():
            await asyncio.sleep(0.1)


def stub(host: SchedulerHost) -> tuple[grpc.aio.Channel, worker_pb2_grpc.WorkerStub]:
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{host.grpc_port}")
    return channel, worker_pb2_grpc.WorkerStub(channel)


@pytest.fixture
def replicas(
    kafka_bootstrap: str, tidb_url: str, kafka_group: str, tmp_path: Path
) -> Iterator[list[Replica]]:
    # Imported here: cluster.py imports this module for ReadyPipeline.
    from tests.integration.scheduler.cluster import Replica

    made = [
        Replica(
            name=f"replica-{c}-{uuid.uuid4().hex[:6]}",
            kafka_bootstrap=kafka_bootstrap,
            database_url=tidb_url,
            group=kafka_group,
            log_dir=tmp_path,
        )
        for c in "ab"
    ]
    yield made
    for replica in made:
        replica.stop()

"""The HTTP API end to end on real Kafka and real TiDB (the scheduler is not running:
tasks are checked on the pipeline's topic, and admission is simulated with a row)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable

import pytest
from aiokafka import TopicPartition

from protos.wsched.v1 import events_pb2
from services.deploy.ports import DeployFailed, DeploymentStatus, NoopDeployer
from services.infra.process import free_port
from services.kafka.admin import KafkaTopicAdmin
from services.kafka.producer import KafkaProducer
from services.placement import PLACEMENT_TOPIC, SHARDS, shard_of
from services.store.control import Pipeline
from tests.integration.api.conftest import LIMITS, end_offsets, read_partitions
from tests.unit.services.api.harness import (
    Api,
    assert_error,
    bearer,
    insert_task,
    running_api,
    settings_for,
)

pytestmark = pytest.mark.integration

PIPE = "/api/applications/a/pipelines/p"


async def test_a_pipeline_gets_its_topic_and_a_placement_event(
    real_api: Api, kafka_bootstrap: str, topic_admin: KafkaTopicAdmin
) -> None:
    key = await real_api.tenant("acme")
    await real_api.application(key, "a")
    pipeline = await real_api.pipeline(key, "a", "p", partitions=3)
    assert pipeline["state"] == "ready", pipeline
    assert await topic_admin.partitions(pipeline["topic"]) == 3
    assert await topic_admin.partitions(PLACEMENT_TOPIC) == SHARDS
    shard = shard_of(pipeline["id"])
    records = await read_partitions(
        kafka_bootstrap, [TopicPartition(PLACEMENT_TOPIC, shard)], until=1
    )
    events = [events_pb2.PlacementEvent.FromString(r.value) for r in records]
    mine = [e for e in events if e.pipeline_id == pipeline["id"]]
    assert [(e.shard, e.kind) for e in mine] == [
        (shard, events_pb2.PlacementEvent.Kind.KIND_CREATED)
    ]
    assert {r.key for r in records if r.key == pipeline["id"].encode()}


async def test_submitted_tasks_land_on_the_topic_keyed_by_id_with_raw_data(
    real_api: Api, kafka_bootstrap: str
) -> None:
    key, pipeline = await real_api.ready_pipeline(topic="dedicated")  # its own topic
    raw = b'{"name":  "scan-1.pdf" , "pages": [1, 2]}'
    single = await real_api.client.post(PIPE, content=raw, headers=bearer(key))
    assert single.status_code == 202, single.text
    items = [{"data": {"n": n}, "id": f"batch-{n}"} for n in range(200)]
    batch = await real_api.client.post(f"{PIPE}/tasks", json={"tasks": items}, headers=bearer(key))
    assert batch.status_code == 202, batch.text
    assert batch.json()["queued"] == 200
    partitions = [TopicPartition(pipeline["topic"], p) for p in range(2)]
    records = await read_partitions(kafka_bootstrap, partitions, until=201)
    events = {r.key: events_pb2.TaskEvent.FromString(r.value) for r in records}
    assert len(records) == 201
    assert events[single.json()["id"].encode()].submit.data == raw
    for n in range(200):
        event = events[f"batch-{n}".encode()]
        assert event.task_id == f"batch-{n}"
        assert event.pipeline_id == pipeline["id"]
        assert json.loads(event.submit.data) == {"n": n}
    # Keyed by task id: both partitions are used by 200 distinct keys.
    assert {r.partition for r in records} == {0, 1}


async def test_resubmits_of_admitted_tasks_are_idempotent(
    real_api: Api, kafka_bootstrap: str
) -> None:
    key, pipeline = await real_api.ready_pipeline(topic="dedicated")  # its own topic
    insert_task(real_api.database_url, pipeline_id=pipeline["id"], task_id="t-1", data=b'{"n":1}')
    same = await real_api.client.post(f"{PIPE}?id=t-1", content=b'{"n":1}', headers=bearer(key))
    assert same.status_code == 200, same.text
    assert (same.json()["id"], same.json()["status"]) == ("t-1", "queued")
    other = await real_api.client.post(f"{PIPE}?id=t-1", content=b'{"n":2}', headers=bearer(key))
    assert_error(other, 409, "task_conflict")
    items = [{"data": {"n": 1}, "id": "t-1"}, {"data": {"n": 3}, "id": "t-1"}]
    batch = await real_api.client.post(f"{PIPE}/tasks", json={"tasks": items}, headers=bearer(key))
    assert [r["result"] for r in batch.json()["results"]] == ["existing", "conflict"]
    assert await end_offsets(kafka_bootstrap, pipeline["topic"], 2) == 0


async def test_bad_requests_are_answered_in_the_error_shape(real_api: Api) -> None:
    key, _ = await real_api.ready_pipeline()
    other = await real_api.tenant("other")
    checks = [
        (
            await real_api.client.post(
                "/api/applications", json={"name": "Bad_Name"}, headers=bearer(key)
            ),
            422,
            "invalid_request",
        ),
        (
            await real_api.client.post(PIPE, content=b'{"a": [', headers=bearer(key)),
            400,
            "malformed_json",
        ),
        (
            await real_api.client.post(
                PIPE, content=b'{"x":"' + b"y" * 300_000 + b'"}', headers=bearer(key)
            ),
            413,
            "data_too_large",
        ),
        (
            await real_api.client.post(PIPE, json={}, headers=bearer("wsk_wrong")),
            401,
            "unauthorized",
        ),
        (await real_api.client.post(PIPE, json={}), 401, "unauthorized"),
        (await real_api.client.post(PIPE, json={}, headers=bearer(other)), 404, "not_found"),
        (
            await real_api.client.post(
                "/api/applications/a/pipelines/none", json={}, headers=bearer(key)
            ),
            404,
            "not_found",
        ),
    ]
    for answer, status, error in checks:
        assert_error(answer, status, error)


class FailingDeployer(NoopDeployer):
    async def deploy(self, pipeline: Pipeline) -> DeploymentStatus:
        raise DeployFailed(f"chart {pipeline.chart} not found")


async def test_a_pipeline_that_failed_to_deploy_refuses_tasks(
    tidb_api_url: str, kafka_bootstrap: str
) -> None:
    settings = settings_for(tidb_api_url, kafka_bootstrap=kafka_bootstrap)
    async with running_api(settings, limits=LIMITS, deployer=FailingDeployer()) as api:
        key = await api.tenant("acme")
        await api.application(key, "a")
        pipeline = await api.pipeline(key, "a", "p", chart="./nowhere")
        answer = await api.client.post(PIPE, json={"n": 1}, headers=bearer(key))
    assert pipeline["state"] == "failed"
    assert "chart ./nowhere not found" in assert_error(answer, 409, "pipeline_not_ready")


@contextlib.asynccontextmanager
async def silent_broker() -> AsyncIterator[str]:
    """A port that accepts connections and never answers: a hung broker."""

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client gives up and closes
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.close()
        await server.wait_closed()


@contextlib.asynccontextmanager
async def refusing_broker() -> AsyncIterator[str]:
    """A port where nothing listens: connections are refused."""
    yield f"127.0.0.1:{free_port()}"


@pytest.mark.parametrize("broker", [refusing_broker, silent_broker])
async def test_a_broker_that_is_down_gives_503_within_the_deadline(
    tidb_api_url: str,
    kafka_bootstrap: str,
    broker: Callable[[], contextlib.AbstractAsyncContextManager[str]],
) -> None:
    # Topics are created on the real broker; tasks are produced to one that is down.
    settings = settings_for(tidb_api_url, kafka_bootstrap=kafka_bootstrap)
    async with broker() as address:
        dead = KafkaProducer(bootstrap=address, deadline_s=1.0)
        try:
            async with running_api(settings, limits=LIMITS, producer=dead) as api:
                key, _ = await api.ready_pipeline()
                async with asyncio.timeout(15):  # a hang fails here, not at the test timeout
                    single = await api.client.post(PIPE, json={"n": 1}, headers=bearer(key))
                    batch = await api.client.post(
                        f"{PIPE}/tasks", json={"tasks": [{"data": {}}]}, headers=bearer(key)
                    )
        finally:
            await dead.stop()
    for answer in (single, batch):
        assert "Kafka" in assert_error(answer, 503, "broker_unavailable")
        assert int(answer.headers["retry-after"]) > 0


async def test_deleting_a_pipeline_deletes_its_topic(
    real_api: Api, topic_admin: KafkaTopicAdmin
) -> None:
    key, pipeline = await real_api.ready_pipeline(topic="dedicated")  # its own topic
    assert await topic_admin.partitions(pipeline["topic"]) == 2
    for n in range(3):
        insert_task(real_api.database_url, pipeline_id=pipeline["id"], task_id=f"t{n}", data=b"{}")
    answer = await real_api.client.delete(PIPE, headers=bearer(key))
    assert answer.status_code == 202
    await real_api.settled()
    for _ in range(100):  # Kafka deletes topics asynchronously: up to 20 s
        partitions = await topic_admin.partitions(pipeline["topic"])
        if partitions is None:
            break
        await asyncio.sleep(0.2)
    assert partitions is None
    gone = await real_api.client.get(PIPE, headers=bearer(key))
    assert_error(gone, 404, "not_found")
    assert (
        await real_api.ctx.db(real_api.store.get_task, pipeline_id=pipeline["id"], task_id="t0")
        is None
    )
    assert await real_api.ctx.db(real_api.store.pipeline_by_id, pipeline["id"]) is None


async def test_a_bulk_requeue_produces_one_requeue_per_dead_task_on_kafka(
    real_api: Api, kafka_bootstrap: str
) -> None:
    key, pipeline = await real_api.ready_pipeline(topic="dedicated")  # its own topic
    for n in range(300):
        insert_task(
            real_api.database_url,
            pipeline_id=pipeline["id"],
            task_id=f"d-{n:03d}",
            data=b"{}",
            status="dead" if n % 3 else "succeeded",
        )
    answer = await real_api.client.post(f"{PIPE}/tasks:requeue", json={}, headers=bearer(key))
    assert answer.status_code == 202, answer.text
    assert answer.json()["acted"] == 200
    partitions = [TopicPartition(pipeline["topic"], p) for p in range(2)]
    records = await read_partitions(kafka_bootstrap, partitions, until=200)
    events = [events_pb2.TaskEvent.FromString(r.value) for r in records]
    assert len(events) == 200 and {e.WhichOneof("kind") for e in events} == {"requeue"}
    assert {e.task_id for e in events} == {f"d-{n:03d}" for n in range(300) if n % 3}
    assert all(r.key == e.task_id.encode() for r, e in zip(records, events, strict=True))

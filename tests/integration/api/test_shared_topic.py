"""A shared pipeline through the API on real Kafka and real TiDB (design D3): no topic of
its own; its tasks go to its shard's partition of ``wsched.shared`` keyed by task id, with
the pipeline named in a header (the scheduler is not running: the records are read back)."""

from __future__ import annotations

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from protos.wsched.v1 import events_pb2
from services.kafka.admin import KafkaTopicAdmin
from services.placement import PIPELINE_HEADER, SHARDS, SHARED_TOPIC, pipeline_topic, shard_of
from tests.integration.api.conftest import read_partitions
from tests.unit.services.api.harness import Api, bearer

pytestmark = pytest.mark.integration

PIPE = "/api/applications/a/pipelines/small"


async def _records_of(bootstrap: str, pipeline_id: str) -> list[tuple[bytes, events_pb2.TaskEvent]]:
    """The pipeline's records in its shard's partition, in order: other tests' shared
    pipelines may share the partition, so they are told apart by the header."""
    partition = TopicPartition(SHARED_TOPIC, shard_of(pipeline_id))
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        held = (await consumer.end_offsets([partition]))[partition]
    finally:
        await consumer.stop()
    records = await read_partitions(bootstrap, [partition], until=held)
    header = (PIPELINE_HEADER, pipeline_id.encode())
    return [
        (r.key, events_pb2.TaskEvent.FromString(r.value))
        for r in records
        if header in list(r.headers)
    ]


async def test_a_shared_pipelines_tasks_go_to_its_shards_partition_of_the_shared_topic(
    real_api: Api, kafka_bootstrap: str, topic_admin: KafkaTopicAdmin
) -> None:
    key = await real_api.tenant("acme")
    await real_api.application(key, "a")
    pipeline = await real_api.pipeline(key, "a", "small", topic="shared")
    assert pipeline["state"] == "ready", pipeline
    assert (pipeline["topic_mode"], pipeline["topic"], pipeline["partitions"]) == (
        "shared",
        SHARED_TOPIC,
        1,
    )
    assert await topic_admin.partitions(SHARED_TOPIC) == SHARDS
    assert await topic_admin.partitions(pipeline_topic(pipeline["id"])) is None
    submitted = await real_api.client.post(f"{PIPE}?id=t1", json={"n": 1}, headers=bearer(key))
    assert submitted.status_code == 202, submitted.text
    cancelled = await real_api.client.delete(f"{PIPE}/tasks/t1", headers=bearer(key))
    assert cancelled.status_code == 202, cancelled.text
    batch = [{"data": {"n": n}, "id": f"b{n}"} for n in range(3)]
    answer = await real_api.client.post(f"{PIPE}/tasks", json={"tasks": batch}, headers=bearer(key))
    assert answer.status_code == 202, answer.text
    records = await _records_of(kafka_bootstrap, pipeline["id"])
    # One partition: all of the pipeline's records in the order sent, the cancel after its
    # submit.
    assert [(k, e.task_id, e.WhichOneof("kind"), e.pipeline_id) for k, e in records] == [
        (task_id.encode(), task_id, kind, pipeline["id"])
        for task_id, kind in [
            ("t1", "submit"),
            ("t1", "cancel"),
            ("b0", "submit"),
            ("b1", "submit"),
            ("b2", "submit"),
        ]
    ]
    assert records[0][1].submit.data == b'{"n":1}'
    # Deleting it leaves the shared topic to the others.
    deleted = await real_api.client.delete(PIPE, headers=bearer(key))
    assert deleted.status_code == 202, deleted.text
    await real_api.settled()
    assert await real_api.ctx.db(real_api.store.pipeline_by_id, pipeline["id"]) is None
    assert await topic_admin.partitions(SHARED_TOPIC) == SHARDS

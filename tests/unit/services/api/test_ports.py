"""The Kafka and deployer ports as the API uses them, and the documented API surface."""

from __future__ import annotations

import pytest

from protos.wsched.v1 import events_pb2
from services.kafka.admin import KafkaTopicAdmin, TopicError
from services.kafka.producer import (
    BrokerUnavailable,
    KafkaProducer,
    MemoryProducer,
    OutgoingTask,
    placement_record,
)
from services.placement import PLACEMENT_TOPIC, Route, pipeline_id_of, pipeline_topic
from tests.unit.services.api.harness import Api


async def test_an_unconfigured_broker_is_unavailable_with_the_setting_named() -> None:
    producer = KafkaProducer(bootstrap="")
    task = OutgoingTask(id="t", data=b"{}", data_sha256=b"")
    with pytest.raises(BrokerUnavailable, match="WSCHED_KAFKA_BOOTSTRAP"):
        await producer.submit(Route("p"), [task])
    await producer.stop()
    with pytest.raises(TopicError, match="WSCHED_KAFKA_BOOTSTRAP"):
        await KafkaTopicAdmin(bootstrap="").create_pipeline_topic("p", 2)


def test_placement_records_go_to_the_shards_partition_keyed_by_pipeline() -> None:
    record = placement_record("pid", 17, events_pb2.PlacementEvent.Kind.KIND_DELETED)
    assert (record.topic, record.partition, record.key) == (PLACEMENT_TOPIC, 17, b"pid")
    event = events_pb2.PlacementEvent.FromString(record.value)
    assert (event.schema_version, event.pipeline_id, event.shard) == (1, "pid", 17)


async def test_cancel_and_requeue_travel_on_the_tasks_topic_and_key() -> None:
    producer = MemoryProducer(clock_ms=lambda: 1234)
    await producer.cancel(Route("pid"), "t1", reason="no longer needed")
    await producer.requeue(Route("pid"), "t1")
    assert {(r.topic, r.key) for r in producer.records} == {(pipeline_topic("pid"), b"t1")}
    cancel, requeue = producer.task_events("pid")
    assert (cancel.cancel.reason, cancel.produced_at_ms) == ("no longer needed", 1234)
    assert requeue.WhichOneof("kind") == "requeue"


def test_topic_names_round_trip() -> None:
    assert pipeline_id_of(pipeline_topic("abc")) == "abc"
    assert pipeline_id_of("other") is None
    assert pipeline_id_of("wsched.p.") is None


async def test_the_openapi_document_lists_every_route(api: Api) -> None:
    answer = await api.client.get("/openapi.json")
    assert answer.status_code == 200
    paths = answer.json()["paths"]
    base = "/api/applications/{app}/pipelines/{pipeline}"
    expected = {
        "/api/tenants": {"get", "post"},
        "/api/applications": {"get", "post"},
        "/api/applications/{app}": {"get", "delete"},
        "/api/applications/{app}/pipelines": {"get", "post"},
        base: {"get", "patch", "delete", "post"},
        f"{base}/tasks": {"get", "post"},
        f"{base}/tasks/{{task_id}}": {"get", "delete"},
        f"{base}/tasks/{{task_id}}/requeue": {"post"},
        f"{base}/stats": {"get"},
    }
    for path, methods in expected.items():
        assert set(paths[path]) >= methods, path
    docs = await api.client.get("/docs")
    assert docs.status_code == 200

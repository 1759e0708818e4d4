"""Where the producer puts a pipeline's task events: its own topic, or its shard's
partition of the shared topic with the pipeline named in a header (design D3)."""

from __future__ import annotations

from protos.wsched.v1 import events_pb2
from services.kafka.consumer import TRACEPARENT
from services.kafka.producer import MemoryProducer, OutgoingTask
from services.placement import (
    PIPELINE_HEADER,
    SHARED_TOPIC,
    Route,
    TopicMode,
    pipeline_topic,
    shard_of,
)

SHARED = Route("pipe-1", TopicMode.SHARED)
PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def _task(task_id: str, trace_parent: str | None = None) -> OutgoingTask:
    return OutgoingTask(id=task_id, data=b"{}", data_sha256=b"x" * 32, trace_parent=trace_parent)


async def _every_kind(producer: MemoryProducer, route: Route) -> None:
    await producer.submit(route, [_task("t1")])
    await producer.cancel(route, "t1", reason="r")
    await producer.requeue(route, "t1")
    await producer.purge(route, "t1", finished_before_ms=5)
    await producer.schedule_changed(route, "s1", 2)


async def test_a_shared_pipelines_events_go_to_its_shards_partition_with_its_header() -> None:
    producer = MemoryProducer()
    await _every_kind(producer, SHARED)
    header = (PIPELINE_HEADER, b"pipe-1")
    assert [(r.topic, r.partition, r.key, r.headers) for r in producer.records] == [
        (SHARED_TOPIC, shard_of("pipe-1"), key, (header,))
        for key in (b"t1", b"t1", b"t1", b"t1", b"s1")
    ]
    kinds = [e.WhichOneof("kind") for e in producer.task_events("pipe-1")]
    assert kinds == ["submit", "cancel", "requeue", "purge", "schedule_changed"]
    assert {e.pipeline_id for e in producer.task_events("pipe-1")} == {"pipe-1"}


async def test_a_dedicated_pipelines_events_keep_its_own_topic_and_no_header() -> None:
    producer = MemoryProducer()
    await _every_kind(producer, Route("pipe-1"))
    assert {(r.topic, r.partition, r.headers) for r in producer.records} == {
        (pipeline_topic("pipe-1"), None, ())
    }


async def test_a_traced_submit_on_the_shared_topic_carries_both_headers() -> None:
    producer = MemoryProducer()
    await producer.submit(SHARED, [_task("t1", trace_parent=PARENT)])
    [record] = producer.records
    assert dict(record.headers) == {PIPELINE_HEADER: b"pipe-1", TRACEPARENT: PARENT.encode()}
    assert events_pb2.TaskEvent.FromString(record.value).submit.trace_parent == PARENT


async def test_task_events_are_told_apart_by_pipeline_on_the_shared_topic() -> None:
    producer = MemoryProducer()
    await producer.submit(SHARED, [_task("a")])
    await producer.submit(Route("pipe-2", TopicMode.SHARED), [_task("b")])
    await producer.submit(Route("pipe-3"), [_task("c")])
    assert [e.task_id for e in producer.task_events("pipe-1")] == ["a"]
    assert [e.task_id for e in producer.task_events("pipe-2")] == ["b"]
    assert [e.task_id for e in producer.task_events("pipe-3")] == ["c"]

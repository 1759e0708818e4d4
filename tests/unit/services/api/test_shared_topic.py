"""A pipeline's topic, chosen at creation (design D3): a topic of its own, or its shard's
partition of the shared topic; the API's default, the refusals, and what the reconciler
does (and does not do) with topics for a shared pipeline."""

from __future__ import annotations

from typing import Any

import pytest

from protos.wsched.v1 import events_pb2
from services.deploy.ports import NoopDeployer
from services.kafka.admin import MemoryTopicAdmin
from services.kafka.producer import MemoryProducer
from services.placement import (
    PIPELINE_HEADER,
    PLACEMENT_TOPIC,
    SHARDS,
    SHARED_TOPIC,
    TopicMode,
    shard_of,
)
from tests.unit.services.api.conftest import LIMITS, Fakes
from tests.unit.services.api.harness import (
    Api,
    assert_error,
    bearer,
    running_api,
    settings_for,
)

Kind = events_pb2.PlacementEvent.Kind
PIPELINES = "/api/applications/a/pipelines"


class RecordingAdmin(MemoryTopicAdmin):
    """Remembers which pipeline topics were created and deleted; ``shared_failures`` makes
    that many ensures of the shared topic fail first."""

    def __init__(self, *, shared_failures: int = 0) -> None:
        super().__init__()
        self.created: list[str] = []
        self.deleted: list[str] = []
        self.shared_failures = shared_failures

    async def create_pipeline_topic(self, pipeline_id: str, partitions: int) -> None:
        self.created.append(pipeline_id)
        await super().create_pipeline_topic(pipeline_id, partitions)

    async def delete_pipeline_topic(self, pipeline_id: str) -> None:
        self.deleted.append(pipeline_id)
        await super().delete_pipeline_topic(pipeline_id)

    async def ensure_shared_topic(self) -> None:
        if self.shared_failures:
            self.shared_failures -= 1
            raise RuntimeError("broker away")
        await super().ensure_shared_topic()


async def _create(api: Api, key: str, **fields: Any) -> Any:
    body = {"name": "p", "chart": "./charts/noop", **fields}
    return await api.client.post(PIPELINES, json=body, headers=bearer(key))


async def _tenant(api: Api) -> str:
    key = await api.tenant("acme")
    await api.application(key, "a")
    return key


async def test_a_small_pipeline_is_shared_by_default_and_a_big_one_has_its_own(
    api: Api, fakes: Fakes
) -> None:
    key = await _tenant(api)
    small = await api.pipeline(key, "a", "small")
    assert (small["topic_mode"], small["partitions"], small["topic"]) == (
        "shared",
        1,
        SHARED_TOPIC,
    )
    # Asking for partitions is asking for a big pipeline: a topic of its own.
    big = await api.pipeline(key, "a", "big", partitions=4)
    assert (big["topic_mode"], big["partitions"]) == ("dedicated", 4)
    assert big["topic"] == f"wsched.p.{big['id']}"
    assert fakes.admin.topics[big["topic"]] == 4
    assert fakes.admin.topics[SHARED_TOPIC] == SHARDS
    assert f"wsched.p.{small['id']}" not in fakes.admin.topics


async def test_a_shared_pipeline_goes_to_its_shards_partition_of_the_shared_topic(
    api: Api, fakes: Fakes
) -> None:
    key = await _tenant(api)
    answer = await _create(api, key, topic="shared")
    assert answer.status_code == 201, answer.text
    assert (answer.json()["topic_mode"], answer.json()["partitions"]) == ("shared", 1)
    await api.settled()
    shown = (await api.client.get(f"{PIPELINES}/p", headers=bearer(key))).json()
    pipeline_id = shown["id"]
    assert (shown["state"], shown["topic"], shown["partitions"]) == ("ready", SHARED_TOPIC, 1)
    assert not [topic for topic in fakes.admin.topics if topic.startswith("wsched.p.")]
    assert fakes.admin.topics[SHARED_TOPIC] == SHARDS
    [placement] = fakes.producer.placements()
    assert (placement.pipeline_id, placement.kind) == (pipeline_id, Kind.KIND_CREATED)
    submitted = await api.client.post(f"{PIPELINES}/p?id=t1", json={"n": 1}, headers=bearer(key))
    assert submitted.status_code == 202, submitted.text
    [record] = [r for r in fakes.producer.records if r.topic != PLACEMENT_TOPIC]
    assert (record.topic, record.partition, record.key) == (
        SHARED_TOPIC,
        shard_of(pipeline_id),
        b"t1",
    )
    assert dict(record.headers)[PIPELINE_HEADER] == pipeline_id.encode()
    [event] = fakes.producer.task_events(pipeline_id)
    assert event.pipeline_id == pipeline_id


@pytest.mark.parametrize("partitions", [1, None])
async def test_a_shared_pipeline_may_say_one_partition_or_none(
    api: Api, partitions: int | None
) -> None:
    key = await _tenant(api)
    fields = {"topic": "shared"} if partitions is None else {"topic": "shared", "partitions": 1}
    answer = await _create(api, key, **fields)
    assert answer.status_code == 201, answer.text
    assert answer.json()["partitions"] == 1


async def test_a_shared_pipeline_with_more_partitions_is_refused_naming_the_field(
    api: Api,
) -> None:
    key = await _tenant(api)
    answer = await _create(api, key, topic="shared", partitions=4)
    detail = assert_error(answer, 422, "invalid_request")
    assert detail.startswith("partitions: ")
    assert "not 4" in detail and 'topic "dedicated"' in detail
    listed = await api.client.get(PIPELINES, headers=bearer(key))
    assert listed.json()["pipelines"] == []


async def test_an_unknown_topic_is_refused(api: Api) -> None:
    key = await _tenant(api)
    detail = assert_error(await _create(api, key, topic="wsched.shared"), 422, "invalid_request")
    assert detail.startswith("topic: ")


async def test_the_topic_cannot_be_patched(api: Api) -> None:
    key, _ = await api.ready_pipeline()
    answer = await api.client.patch(f"{PIPELINES}/p", json={"topic": "shared"}, headers=bearer(key))
    assert "topic cannot change" in assert_error(answer, 422, "invalid_request")


async def test_the_operators_default_applies_when_no_topic_is_asked_for(
    migrated_sqlite: str,
) -> None:
    settings = settings_for(migrated_sqlite).model_copy(
        update={"pipeline_topic": TopicMode.DEDICATED}
    )
    async with running_api(
        settings,
        limits=LIMITS,
        producer=MemoryProducer(),
        admin=MemoryTopicAdmin(),
        deployer=NoopDeployer(),
    ) as api:
        key = await _tenant(api)
        own = await _create(api, key)
        assert (own.json()["topic_mode"], own.json()["partitions"]) == ("dedicated", 2)
        shared = await _create(api, key, name="small", topic="shared")
        assert (shared.json()["topic_mode"], shared.json()["partitions"]) == ("shared", 1)


async def test_the_reconciler_neither_creates_nor_deletes_a_topic_for_a_shared_pipeline(
    migrated_sqlite: str,
) -> None:
    # The shared topic could not be made at start: the first shared pipeline makes it.
    admin = RecordingAdmin(shared_failures=1)
    async with running_api(
        settings_for(migrated_sqlite),
        limits=LIMITS,
        producer=MemoryProducer(),
        admin=admin,
        deployer=NoopDeployer(),
    ) as api:
        key = await _tenant(api)
        assert SHARED_TOPIC not in admin.topics
        shared = await api.pipeline(key, "a", "p", topic="shared")
        assert shared["state"] == "ready", shared
        assert admin.topics[SHARED_TOPIC] == SHARDS
        own = await api.pipeline(key, "a", "own", topic="dedicated")
        for name in ("p", "own"):
            answer = await api.client.delete(f"{PIPELINES}/{name}", headers=bearer(key))
            assert answer.status_code == 202, answer.text
        await api.settled()
        assert await api.ctx.db(api.store.pipeline_by_id, shared["id"]) is None
    assert admin.created == admin.deleted == [own["id"]]
    assert admin.topics[SHARED_TOPIC] == SHARDS

"""Pipeline lifecycle through the routes and the reconciler, with in-memory ports."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest
import sqlalchemy as sa

from protos.wsched.v1 import events_pb2
from services.api.limits import Limits
from services.deploy.ports import DeployFailed, DeploymentStatus, NoopDeployer
from services.kafka.admin import MemoryTopicAdmin
from services.kafka.producer import MemoryProducer
from services.placement import PLACEMENT_TOPIC, SHARDS, shard_of
from services.store.control import ControlStore, Pipeline, PipelineSpec
from services.store.schema import pipelines, task_timers, tasks
from tests.unit.services.api.conftest import LIMITS, Fakes
from tests.unit.services.api.harness import (
    Api,
    assert_error,
    bearer,
    insert_task,
    running_api,
    settings_for,
)

Kind = events_pb2.PlacementEvent.Kind
PIPELINES = "/api/applications/a/pipelines"


async def test_a_created_pipeline_gets_its_topic_deployment_and_placement(
    api: Api, fakes: Fakes
) -> None:
    key = await api.tenant("acme")
    await api.application(key, "a")
    answer = await api.client.post(
        PIPELINES,
        json={"name": "ocr", "chart": "oci://charts/ocr", "partitions": 3, "retention": "2d"},
        headers=bearer(key),
    )
    assert answer.status_code == 201, answer.text
    created = answer.json()
    assert created["state"] == "provisioning"
    assert created["worker_token"].startswith("wst_")
    assert created["retention_s"] == 2 * 86400
    await api.settled()
    shown = (await api.client.get(f"{PIPELINES}/ocr", headers=bearer(key))).json()
    assert shown["state"] == "ready"
    assert shown["deployment"] == {"status": "deployed", "revision": 1, "detail": ""}
    assert fakes.admin.topics[shown["topic"]] == 3
    assert shown["topic"] == f"wsched.p.{created['id']}"
    assert fakes.admin.topics[PLACEMENT_TOPIC] == SHARDS
    [placement] = fakes.producer.placements()
    assert (placement.pipeline_id, placement.shard, placement.kind) == (
        created["id"],
        shard_of(created["id"]),
        Kind.KIND_CREATED,
    )
    [record] = [r for r in fakes.producer.records if r.topic == PLACEMENT_TOPIC]
    assert record.partition == shard_of(created["id"])
    assert await api.ctx.db(
        api.store.verify_worker_token, pipeline_id=created["id"], token=created["worker_token"]
    )
    assert not await api.ctx.db(
        api.store.verify_worker_token, pipeline_id=created["id"], token="wst_guess"
    )


async def test_a_failed_pipeline_shows_its_reason_and_a_patch_retries_it(
    api: Api, fakes: Fakes
) -> None:
    key = await api.tenant("acme")
    await api.application(key, "a")
    fakes.admin.fail = "TopicAuthorizationFailed"
    failed = await api.pipeline(key, "a", "p", topic="dedicated")
    assert failed["state"] == "failed"
    assert "TopicAuthorizationFailed" in failed["reason"]
    assert failed["deployment"]["status"] == "failed"
    assert fakes.producer.placements() == []
    fakes.admin.fail = None
    patched = await api.client.patch(
        f"{PIPELINES}/p", json={"max_attempts": 7}, headers=bearer(key)
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["state"] == "provisioning"
    await api.settled()
    shown = (await api.client.get(f"{PIPELINES}/p", headers=bearer(key))).json()
    assert (shown["state"], shown["reason"], shown["max_attempts"]) == ("ready", "", 7)


class FailingDeployer(NoopDeployer):
    def __init__(self) -> None:
        super().__init__()
        self.fail: str | None = None

    async def deploy(self, pipeline: Pipeline) -> DeploymentStatus:
        if self.fail is not None:
            raise DeployFailed(self.fail)
        return await super().deploy(pipeline)


async def test_patching_a_ready_pipeline_redeploys_it_and_announces_the_change(
    migrated_sqlite: str,
) -> None:
    producer, deployer = MemoryProducer(), FailingDeployer()
    async with running_api(
        settings_for(migrated_sqlite),
        limits=LIMITS,
        producer=producer,
        admin=MemoryTopicAdmin(),
        deployer=deployer,
    ) as api:
        key, pipeline = await api.ready_pipeline()
        answer = await api.client.patch(
            f"{PIPELINES}/p", json={"values": {"image": "v2"}}, headers=bearer(key)
        )
        assert answer.json()["deployment"]["status"] == "pending"
        assert answer.json()["state"] == "ready"
        await api.settled()
        shown = (await api.client.get(f"{PIPELINES}/p", headers=bearer(key))).json()
        assert shown["deployment"]["revision"] == 2
        assert shown["values"] == {"image": "v2"}
        deployer.fail = "chart not found"
        await api.client.patch(f"{PIPELINES}/p", json={"chart": "./gone"}, headers=bearer(key))
        await api.settled()
        shown = (await api.client.get(f"{PIPELINES}/p", headers=bearer(key))).json()
    # A failed redeploy leaves the pipeline serving, with the reason shown.
    assert (shown["state"], shown["reason"]) == ("ready", "chart not found")
    assert shown["deployment"]["status"] == "failed"
    kinds = [p.kind for p in producer.placements() if p.pipeline_id == pipeline["id"]]
    assert kinds == [Kind.KIND_CREATED, Kind.KIND_UPDATED, Kind.KIND_UPDATED]


@pytest.mark.parametrize(
    ("body", "needle"),
    [({"partitions": 4}, "partitions cannot change"), ({"name": "q"}, "cannot be renamed")],
)
async def test_immutable_fields_cannot_be_patched(
    api: Api, body: dict[str, Any], needle: str
) -> None:
    key, _ = await api.ready_pipeline()
    answer = await api.client.patch(f"{PIPELINES}/p", json=body, headers=bearer(key))
    assert needle in assert_error(answer, 422, "invalid_request")


@pytest.mark.parametrize(
    ("scaling", "needle"),
    [
        ({"max_replica": 3}, "scaling.max_replica is not a scaling setting"),
        ({"min_replicas": 5, "max_replicas": 2}, "scaling.max_replicas must be at least"),
        ({"tasks_per_replica": 0}, "scaling.tasks_per_replica"),
        ({"min_replicas": "two"}, "scaling.min_replicas"),
    ],
)
async def test_bad_scaling_is_refused_at_create_and_patch_and_nothing_changes(
    api: Api, scaling: dict[str, Any], needle: str
) -> None:
    key, before = await api.ready_pipeline()
    created = await api.client.post(
        PIPELINES, json={"name": "q", "chart": "./c", "scaling": scaling}, headers=bearer(key)
    )
    assert needle in assert_error(created, 422, "invalid_request")
    patched = await api.client.patch(
        f"{PIPELINES}/p", json={"scaling": scaling}, headers=bearer(key)
    )
    assert needle in assert_error(patched, 422, "invalid_request")
    after = (await api.client.get(f"{PIPELINES}/p", headers=bearer(key))).json()
    assert after["scaling"] == before["scaling"]
    assert after["deployment"] == before["deployment"]
    missing = await api.client.get(f"{PIPELINES}/q", headers=bearer(key))
    assert_error(missing, 404, "not_found")
    fine = await api.client.patch(
        f"{PIPELINES}/p",
        json={"scaling": {"min_replicas": 0, "max_replicas": 4, "idle_s": 120}},
        headers=bearer(key),
    )
    assert fine.status_code == 200, fine.text
    assert fine.json()["scaling"] == {"min_replicas": 0, "max_replicas": 4, "idle_s": 120}


async def test_delete_frees_the_name_at_once_and_removes_everything(api: Api, fakes: Fakes) -> None:
    key, pipeline = await api.ready_pipeline(topic="dedicated")  # its topic goes too
    insert_task(api.database_url, pipeline_id=pipeline["id"], task_id="t1", data=b"{}")
    engine = sa.create_engine(api.database_url)
    with engine.begin() as conn:
        conn.execute(
            task_timers.insert().values(
                pipeline_id=pipeline["id"], due_at=dt.datetime(2030, 1, 1), task_id="t1"
            )
        )
    answer = await api.client.delete(f"{PIPELINES}/p", headers=bearer(key))
    assert answer.status_code == 202, answer.text
    assert answer.json() == {"id": pipeline["id"], "state": "deleting"}
    again = await api.client.post(
        PIPELINES, json={"name": "p", "chart": "./c"}, headers=bearer(key)
    )
    assert again.status_code == 201, again.text
    await api.settled()
    listed = (await api.client.get(PIPELINES, headers=bearer(key))).json()["pipelines"]
    assert [(p["name"], p["id"]) for p in listed] == [("p", again.json()["id"])]
    assert pipeline["topic"] not in fakes.admin.topics
    assert pipeline["id"] in fakes.deployer.removed
    kinds = [p.kind for p in fakes.producer.placements() if p.pipeline_id == pipeline["id"]]
    assert kinds == [Kind.KIND_CREATED, Kind.KIND_DELETED]
    with engine.connect() as conn:
        left = conn.execute(sa.select(sa.func.count()).select_from(tasks)).scalar_one()
        timers = conn.execute(sa.select(sa.func.count()).select_from(task_timers)).scalar_one()
    engine.dispose()
    assert left == 0 and timers == 0


async def test_an_application_with_pipelines_cannot_be_deleted(api: Api) -> None:
    key, _ = await api.ready_pipeline()
    refused = await api.client.delete("/api/applications/a", headers=bearer(key))
    assert "delete them first" in assert_error(refused, 409, "has_pipelines")
    await api.client.delete(f"{PIPELINES}/p", headers=bearer(key))
    await api.settled()
    deleted = await api.client.delete("/api/applications/a", headers=bearer(key))
    assert deleted.status_code == 204
    gone = await api.client.get("/api/applications/a", headers=bearer(key))
    assert_error(gone, 404, "not_found")


async def test_the_reconciler_resumes_pipelines_left_half_done(migrated_sqlite: str) -> None:
    engine = sa.create_engine(migrated_sqlite)
    store = ControlStore(engine=engine)
    tenant, _ = store.create_tenant("acme")
    app = store.create_application(tenant_id=tenant.id, name="a")
    fresh, _ = store.create_pipeline(app=app, spec=PipelineSpec(name="fresh", chart="./c"))
    doomed, _ = store.create_pipeline(app=app, spec=PipelineSpec(name="doomed", chart="./c"))
    assert store.start_deleting(doomed.id)
    admin = MemoryTopicAdmin()
    admin.topics[doomed.topic] = 2
    async with running_api(
        settings_for(migrated_sqlite),
        limits=LIMITS,
        producer=MemoryProducer(),
        admin=admin,
        deployer=NoopDeployer(),
    ) as api:
        await api.reconciler.scan()
        await api.settled()
    resumed = store.pipeline_by_id(fresh.id)
    engine.dispose()
    assert resumed is not None
    assert resumed.state.value == "ready"
    assert store.pipeline_by_id(doomed.id) is None
    assert doomed.topic not in admin.topics
    assert admin.topics[fresh.topic] == 2


async def test_submits_keep_flowing_while_the_database_is_unreachable(
    api: Api, fakes: Fakes, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, pipeline = await api.ready_pipeline()
    ok = await api.client.post(
        "/api/applications/a/pipelines/p", json={"n": 1}, headers=bearer(key)
    )
    assert ok.status_code == 202

    def down(*_: object, **__: object) -> None:
        raise sa.exc.OperationalError("SELECT", {}, ConnectionRefusedError("tidb is down"))

    for name in ("tenant_by_key", "find_pipeline", "existing_tasks", "get_task"):
        monkeypatch.setattr(api.store, name, down)
    answer = await api.client.post(
        "/api/applications/a/pipelines/p?id=during-outage", json={"n": 2}, headers=bearer(key)
    )
    assert answer.status_code == 202, answer.text
    assert [e.task_id for e in fakes.producer.task_events(pipeline["id"])][-1] == "during-outage"
    read = await api.client.get("/api/applications/a/pipelines/p/tasks/x", headers=bearer(key))
    assert "database" in assert_error(read, 503, "database_unavailable")
    assert read.headers["retry-after"]
    stranger = await api.client.get("/api/applications", headers=bearer("wsk_unknown"))
    assert_error(stranger, 503, "database_unavailable")
    assert "wsched_api_stale_lookups_total" in (await api.client.get("/metrics")).text


def test_limits_defaults_match_the_design() -> None:
    limits = Limits()
    assert limits.max_task_data_bytes == 256 * 1024
    assert limits.max_request_bytes == 64 * 1024 * 1024
    assert limits.max_batch_items == 10_000
    assert limits.produce_deadline_s == 5.0


@pytest.mark.parametrize("pipeline_id", ["a", "01a2086d-22ab-720a-be9b-5b17051411d6", "z" * 36])
def test_shards_are_stable_and_in_range(pipeline_id: str) -> None:
    import zlib

    assert shard_of(pipeline_id) == zlib.crc32(pipeline_id.encode()) % 64
    assert 0 <= shard_of(pipeline_id) < SHARDS


def test_pipeline_rows_record_their_shard(migrated_sqlite: str) -> None:
    engine = sa.create_engine(migrated_sqlite)
    store = ControlStore(engine=engine)
    tenant, _ = store.create_tenant("acme")
    app = store.create_application(tenant_id=tenant.id, name="a")
    created, _ = store.create_pipeline(app=app, spec=PipelineSpec(name="p", chart="./c"))
    with engine.connect() as conn:
        shard = conn.execute(sa.select(pipelines.c.shard)).scalar_one()
    assert shard == shard_of(created.id)
    assert [p.id for p in store.pipelines_of_shards([shard])] == [created.id]
    assert store.pipelines_of_shards([(shard + 1) % SHARDS]) == []
    engine.dispose()


class GatedDeployer(NoopDeployer):
    """Deploys only when let through, recording the values each deploy saw."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()
        self.seen_values: list[dict[str, Any]] = []

    async def deploy(self, pipeline: Pipeline) -> DeploymentStatus:
        self.entered.set()
        await self.gate.wait()
        self.seen_values.append(dict(pipeline.values))
        return await super().deploy(pipeline)


async def test_a_patch_during_provisioning_is_deployed_too(migrated_sqlite: str) -> None:
    deployer = GatedDeployer()
    async with running_api(
        settings_for(migrated_sqlite),
        limits=LIMITS,
        producer=MemoryProducer(),
        admin=MemoryTopicAdmin(),
        deployer=deployer,
    ) as api:
        key = await api.tenant("acme")
        await api.application(key, "a")
        body = {"name": "p", "chart": "./c", "values": {"v": 1}}
        created = await api.client.post(PIPELINES, json=body, headers=bearer(key))
        assert created.status_code == 201
        await deployer.entered.wait()
        patched = await api.client.patch(
            f"{PIPELINES}/p", json={"values": {"v": 2}}, headers=bearer(key)
        )
        assert patched.status_code == 200, patched.text
        deployer.gate.set()
        await api.settled()
        shown = (await api.client.get(f"{PIPELINES}/p", headers=bearer(key))).json()
    # The first deploy's outcome was for stale values: it was not recorded as the final one.
    assert deployer.seen_values == [{"v": 1}, {"v": 2}]
    assert (shown["state"], shown["values"]) == ("ready", {"v": 2})
    assert shown["deployment"]["status"] == "deployed"


async def test_retry_settings_are_shown_and_changed(api: Api) -> None:
    key, before = await api.ready_pipeline()
    assert before["retry"] == {
        "max_attempts": 3,
        "backoff": {"initial_s": 1.0, "multiplier": 2.0, "max_s": 300.0, "jitter": 0.1},
    }
    patched = await api.client.patch(
        f"{PIPELINES}/p",
        json={"retry": {"max_attempts": 5, "backoff": {"initial": "500ms", "max": "2m"}}},
        headers=bearer(key),
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["max_attempts"] == 5
    assert patched.json()["retry"]["backoff"] == {
        "initial_s": 0.5,
        "multiplier": 2.0,
        "max_s": 120.0,
        "jitter": 0.1,
    }
    created = await api.client.post(
        PIPELINES,
        json={"name": "q", "chart": "./c", "retry": {"backoff": {"initial": 3, "jitter": 0}}},
        headers=bearer(key),
    )
    assert created.status_code == 201, created.text
    assert created.json()["retry"]["backoff"]["initial_s"] == 3.0


@pytest.mark.parametrize(
    ("retry", "needle"),
    [
        ({"backoff": {"initial": "soon"}}, "retry.backoff.initial"),
        ({"backoff": {"multiplier": 0.5}}, "retry.backoff.multiplier"),
        ({"backoff": {"jitter": 2}}, "retry.backoff.jitter"),
        ({"backoff": {"initial": "10m", "max": "1m"}}, "max is shorter than initial"),
        ({"backoff": {"initial": "8d"}}, "between 0 s and 7 days"),
        ({"max_attempts": 0}, "retry.max_attempts"),
        ({"attempts": 2}, "retry.attempts"),
    ],
)
async def test_bad_retry_settings_are_422_naming_them(
    api: Api, retry: dict[str, Any], needle: str
) -> None:
    key, before = await api.ready_pipeline()
    patched = await api.client.patch(f"{PIPELINES}/p", json={"retry": retry}, headers=bearer(key))
    assert needle in assert_error(patched, 422, "invalid_request")
    after = (await api.client.get(f"{PIPELINES}/p", headers=bearer(key))).json()
    assert after["retry"] == before["retry"]


async def test_two_spellings_of_max_attempts_must_agree(api: Api) -> None:
    key, _ = await api.ready_pipeline()
    answer = await api.client.post(
        PIPELINES,
        json={"name": "q", "chart": "./c", "max_attempts": 2, "retry": {"max_attempts": 4}},
        headers=bearer(key),
    )
    assert "disagree" in assert_error(answer, 422, "invalid_request")

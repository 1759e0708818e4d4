"""A tenant's lifecycle with the Helm deployer on the real kube-apiserver, Kafka and TiDB:
a worker token rotated (the release deployed again with the new one), and the tenant
deleted (releases uninstalled, topics removed, tasks purged, namespace deleted), resumed
by a new API process after the first died mid-way, and re-created under its name while
its old namespace is still terminating.

No namespace controller runs (see ``tests.fixtures.kube``): a deleted namespace stays
``Terminating`` for the session, which is exactly the case of a re-created tenant.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from services.api.app import make_deployer
from services.deploy.helm import HelmDeployer
from services.kafka.admin import KafkaTopicAdmin
from services.settings import Settings
from services.store.control import ControlStore, Pipeline
from services.store.engine import make_engine
from services.store.schema import tasks
from services.store.tokens import TokenCipher
from tests.integration.api.conftest import LIMITS, REPO
from tests.unit.services.api.harness import (
    OPERATOR,
    Api,
    bearer,
    deleted,
    insert_task,
    running_api,
    tenant_state,
)

pytestmark = pytest.mark.integration

ECHO = str(REPO / "charts" / "examples" / "echo")


async def pipeline_of(api: Api, key: str, name: str) -> dict[str, Any]:
    answer = await api.client.post(
        "/api/applications/shop/pipelines",
        json={"name": name, "chart": ECHO, "topic": "dedicated"},  # topics of their own, to see go
        headers=bearer(key),
    )
    assert answer.status_code == 201, answer.text
    await api.settled()
    current = await api.client.get(f"/api/applications/shop/pipelines/{name}", headers=bearer(key))
    found: dict[str, Any] = current.json()
    assert found["state"] == "ready", found
    return {**found, "worker_token": answer.json()["worker_token"]}


def worker_token_in_cluster(kube: k8s.ApiClient, pipeline: dict[str, Any]) -> str:
    """The token the release's Deployment hands its agent (from the chart's Secret)."""
    deployment = pipeline["deployment"]
    workers = as_dict(
        k8s.AppsV1Api(kube).read_namespaced_deployment(
            deployment["release"], deployment["namespace"]
        )
    )
    agent = next(
        c for c in workers["spec"]["template"]["spec"]["containers"] if c["name"] == "agent"
    )
    env = {e["name"]: e for e in agent["env"]}
    ref = env["WSCHED_WORKER_TOKEN"]["value_from"]["secret_key_ref"]
    secret = as_dict(
        k8s.CoreV1Api(kube).read_namespaced_secret(ref["name"], deployment["namespace"])
    )
    return base64.b64decode(secret["data"][ref["key"]]).decode()


def as_dict(found: Any) -> dict[str, Any]:
    converted: dict[str, Any] = found.to_dict()
    return converted


def meta(found: Any) -> dict[str, Any]:
    return as_dict(found)["metadata"]  # type: ignore[no-any-return]


def helm_releases(kube: k8s.ApiClient, namespace: str) -> list[str]:
    """The releases helm keeps in the namespace (one Secret per revision)."""
    found = k8s.CoreV1Api(kube).list_namespaced_secret(namespace, label_selector="owner=helm")
    return sorted({meta(s)["labels"]["name"] for s in found.items})


def task_rows(database_url: str, pipeline_ids: list[str]) -> int:
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            return int(
                conn.execute(
                    sa.select(sa.func.count())
                    .select_from(tasks)
                    .where(tasks.c.pipeline_id.in_(pipeline_ids))
                ).scalar_one()
            )
    finally:
        engine.dispose()


async def test_a_rotated_worker_token_is_deployed_and_the_old_one_expires(
    helm_api: Api, kube: k8s.ApiClient
) -> None:
    tenant = f"r{uuid.uuid4().hex[:10]}"
    key = await helm_api.tenant(tenant)
    await helm_api.application(key, "shop")
    pipeline = await pipeline_of(helm_api, key, "echo")
    old = pipeline["worker_token"]
    assert worker_token_in_cluster(kube, pipeline) == old
    answer = await helm_api.client.post(
        "/api/applications/shop/pipelines/echo/rotate-token",
        json={"grace_s": 5},
        headers=bearer(key),
    )
    assert answer.status_code == 200, answer.text
    new = answer.json()["worker_token"]
    until = dt.datetime.fromisoformat(answer.json()["previous_token_valid_until"])
    verify = helm_api.store.verify_worker_token
    assert verify(pipeline_id=pipeline["id"], token=old)  # within the grace period
    assert verify(pipeline_id=pipeline["id"], token=new)
    await helm_api.settled()
    current = await helm_api.client.get(
        "/api/applications/shop/pipelines/echo", headers=bearer(key)
    )
    redeployed = current.json()
    assert redeployed["deployment"]["revision"] == pipeline["deployment"]["revision"] + 1
    assert worker_token_in_cluster(kube, redeployed) == new
    await asyncio.sleep(max(0.0, (until - dt.datetime.now(dt.UTC)).total_seconds()) + 0.2)
    assert not verify(pipeline_id=pipeline["id"], token=old)
    assert verify(pipeline_id=pipeline["id"], token=new)


class DiesMidway:
    """The Helm deployer of an API process that dies while uninstalling the second
    release: that call never returns (the process is stopped around it)."""

    def __init__(self, real: HelmDeployer) -> None:
        self.kind = real.kind
        self._real = real
        self.removed: list[str] = []
        self.stuck = asyncio.Event()

    async def deploy(self, pipeline: Pipeline) -> Any:
        return await self._real.deploy(pipeline)

    async def in_place(self, pipeline: Pipeline) -> bool:
        return await self._real.in_place(pipeline)

    async def remove(self, pipeline: Pipeline) -> None:
        if self.removed:
            self.stuck.set()
            await asyncio.Event().wait()  # dies here
        await self._real.remove(pipeline)
        self.removed.append(pipeline.id)

    async def remove_tenant(self, namespace: str) -> None:
        raise AssertionError("never reached: the process died before")


def helm_deployer(settings: Settings) -> HelmDeployer:
    engine = make_engine(settings.effective_database_url())
    store = ControlStore(engine=engine, cipher=TokenCipher(key=settings.effective_secret_key()))
    deployer = make_deployer(settings, store)
    assert isinstance(deployer, HelmDeployer)
    return deployer


async def test_a_tenant_is_deleted_resumed_after_a_crash_and_its_name_reused(
    helm_settings: Settings,
    kube: k8s.ApiClient,
    kafka_bootstrap: str,
) -> None:
    tenant = f"d{uuid.uuid4().hex[:10]}"
    namespace = f"wsched-{tenant}"
    dying = DiesMidway(helm_deployer(helm_settings))
    async with running_api(helm_settings, limits=LIMITS, deployer=dying) as first:
        key = await first.tenant(tenant)
        await first.application(key, "shop")
        made = [await pipeline_of(first, key, name) for name in ("one", "two", "three")]
        ids = [p["id"] for p in made]
        for pipeline_id in ids:
            for n in range(5):
                insert_task(
                    first.database_url,
                    pipeline_id=pipeline_id,
                    task_id=f"t{n}",
                    data=b"{}",
                    status="succeeded",
                    result=b"{}",
                )
        assert len(helm_releases(kube, namespace)) == 3
        answer = await first.client.delete(f"/api/tenants/{tenant}", headers=OPERATOR)
        assert answer.status_code == 202, answer.text
        await asyncio.wait_for(dying.stuck.wait(), timeout=120)
        midway = await tenant_state(first, tenant)
        assert midway["state"] == "deleting"
        assert midway["deletion"]["step"] == "pipelines"
        assert midway["deletion"]["pipelines_left"] == 3
        assert len(dying.removed) == 1
        # The first process dies here: its reconciler's tasks are cancelled mid-call.

    async with running_api(helm_settings, limits=LIMITS) as second:
        await second.reconciler.scan()  # what its start-up pass does
        await second.settled()
        assert (await deleted(second, tenant)).namespace == namespace

        core = k8s.CoreV1Api(kube)
        assert meta(core.read_namespace(namespace))["deletion_timestamp"] is not None
        assert helm_releases(kube, namespace) == []  # every release uninstalled
        admin = KafkaTopicAdmin(bootstrap=kafka_bootstrap)
        for pipeline in made:
            assert await admin.partitions(pipeline["topic"]) is None  # topics removed
        assert task_rows(second.database_url, ids) == 0  # tasks purged
        again = await second.client.delete(f"/api/tenants/{tenant}", headers=OPERATOR)
        assert again.status_code == 404
        assert (
            await second.client.get("/api/applications", headers=bearer(key))
        ).status_code == 401

        # Re-created under its name while the old namespace is still terminating.
        new_key = await second.tenant(tenant)
        await second.application(new_key, "shop")
        reborn = await pipeline_of(second, new_key, "one")
        spare = reborn["deployment"]["namespace"]
        assert spare.startswith(f"{namespace}-") and spare != namespace
        assert meta(core.read_namespace(spare))["deletion_timestamp"] is None
        workers = k8s.AppsV1Api(kube).read_namespaced_deployment(
            reborn["deployment"]["release"], spare
        )
        assert meta(workers)["labels"]["wsched.io/pipeline-id"] == reborn["id"]
        assert meta(core.read_namespace(namespace))["deletion_timestamp"] is not None
        with pytest.raises(ApiException) as err:  # nothing of the new tenant in the old one
            k8s.AppsV1Api(kube).read_namespaced_deployment(
                reborn["deployment"]["release"], namespace
            )
        assert err.value.status == 404

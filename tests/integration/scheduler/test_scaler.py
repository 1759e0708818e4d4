"""The built-in scaler against a real kube-apiserver, alone and inside a scheduler replica.

The test cluster runs no controller-manager or kubelet, so no pod ever starts, but a
Deployment's ``spec.replicas`` and its scale subresource behave as in any cluster.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from kubernetes import client as k8s
from prometheus_client.parser import text_string_to_metric_families

from actors.clock import FakeClock
from services.deploy.naming import namespace_for
from services.infra.kube import KubeCluster
from services.infra.process import free_port
from services.kafka.admin import KafkaTopicAdmin
from services.placement import pipeline_topic
from services.scheduler.host import SchedulerHost
from services.scheduler.scaler import Scaler, Workload
from services.scheduler.scaler_adapters import PIPELINE_LABEL, KubeScale
from services.settings import Settings
from services.store.control import ControlStore, PipelineSpec
from tests.integration.scheduler.conftest import ReadyPipeline, Submit, wait_hosted

pytestmark = pytest.mark.integration


def deployment(name: str, pipeline_id: str, *, replicas: int = 1) -> k8s.V1Deployment:
    selector = {"app": name}
    return k8s.V1Deployment(
        metadata=k8s.V1ObjectMeta(name=name, labels={**selector, PIPELINE_LABEL: pipeline_id}),
        spec=k8s.V1DeploymentSpec(
            replicas=replicas,
            selector=k8s.V1LabelSelector(match_labels=selector),
            template=k8s.V1PodTemplateSpec(
                metadata=k8s.V1ObjectMeta(labels=selector),
                spec=k8s.V1PodSpec(
                    containers=[k8s.V1Container(name="agent", image="registry.k8s.io/pause:3.10")]
                ),
            ),
        ),
    )


def replicas(cluster: KubeCluster, namespace: str, name: str) -> int:
    with cluster.api_client() as api:
        scale = k8s.AppsV1Api(api).read_namespaced_deployment_scale(name, namespace)
    assert scale.spec is not None
    # Scale's spec.replicas is omitted when 0 (omitempty), unlike a Deployment's.
    return scale.spec.replicas or 0


class Policies:
    def __init__(self, scaling: Mapping[str, Any]) -> None:
        self._scaling = scaling

    async def scaling(self, pipeline_id: str) -> Mapping[str, Any] | None:
        return self._scaling


async def test_scaler_drives_a_real_deployment(
    kube_cluster: KubeCluster, kube_namespace: str
) -> None:
    pipeline_id, other_id = str(uuid.uuid4()), str(uuid.uuid4())
    with kube_cluster.api_client() as api:
        apps = k8s.AppsV1Api(api)
        apps.create_namespaced_deployment(kube_namespace, deployment("workers", pipeline_id))
        apps.create_namespaced_deployment(kube_namespace, deployment("others", other_id))
    clock = FakeClock(start_s=1000)
    hosted: dict[str, Workload] = {}
    port = KubeScale(kubeconfig=kube_cluster.kubeconfig_path)
    scaler = Scaler(
        kube=port,
        workloads=lambda: hosted,
        policies=Policies(
            {
                "min_replicas": 0,
                "max_replicas": 4,
                "tasks_per_replica": 10,
                "cooldown_s": 30,
                "idle_s": 100,
            }
        ),
        interval_s=5,
        clock=clock,
    )

    async def step(after_s: float, backlog: int, leased: int = 0) -> int:
        await clock.advance(after_s)
        hosted[pipeline_id] = Workload(namespace=kube_namespace, backlog=backlog, leased=leased)
        await scaler.run_once()
        return replicas(kube_cluster, kube_namespace, "workers")

    try:
        assert await step(0, backlog=25) == 3  # up at once: ceil(25 / 10)
        assert await step(5, backlog=200, leased=4) == 4  # capped at max_replicas
        assert await step(5, backlog=5) == 4  # within the cooldown
        assert await step(24.9, backlog=5) == 4
        assert await step(0.1, backlog=5) == 1  # 30 s after the last change
        assert await step(5, backlog=0) == 1  # idle from here ...
        assert await step(99.9, backlog=0) == 1
        assert await step(0.1, backlog=0) == 0  # ... for idle_s: zero
        assert await step(5, backlog=1) == 1  # and back as soon as there is work
    finally:
        await scaler.stop()
    assert replicas(kube_cluster, kube_namespace, "others") == 1  # not this pipeline's
    assert scaler.stats().errors == 0
    assert scaler.stats().changes == {(pipeline_id, "up"): 3, (pipeline_id, "down"): 2}


async def test_kube_port_reads_only_the_pipelines_deployments(
    kube_cluster: KubeCluster, kube_namespace: str
) -> None:
    pipeline_id = str(uuid.uuid4())
    with kube_cluster.api_client() as api:
        k8s.AppsV1Api(api).create_namespaced_deployment(
            kube_namespace, deployment("workers", pipeline_id, replicas=2)
        )
        port = KubeScale(api=api)
        assert await port.read_replicas(kube_namespace, pipeline_id) == [("workers", 2)]
        assert await port.read_replicas(kube_namespace, str(uuid.uuid4())) == []
        assert await port.read_replicas(f"absent-{uuid.uuid4().hex[:8]}", pipeline_id) == []
        await port.set_replicas(kube_namespace, "workers", 7)
        assert await port.read_replicas(kube_namespace, pipeline_id) == [("workers", 7)]
        port.close()  # the caller's client stays open
        assert await port.read_replicas(kube_namespace, pipeline_id) == [("workers", 7)]


# -- inside a scheduler replica ------------------------------------------------------------


@pytest.fixture
def tenant_namespace(kube_cluster: KubeCluster) -> Iterator[tuple[str, str]]:
    """A unique tenant name and its namespace ``wsched-<tenant>``, deleted afterwards."""
    tenant = f"sc{uuid.uuid4().hex[:10]}"
    namespace = namespace_for(tenant)
    with kube_cluster.api_client() as api:
        core = k8s.CoreV1Api(api)
        core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=namespace)))
        try:
            yield tenant, namespace
        finally:
            core.delete_namespace(namespace)


async def test_the_owning_replica_scales_its_pipeline_on_backlog(
    kube_cluster: KubeCluster,
    tenant_namespace: tuple[str, str],
    engine: sa.Engine,
    kafka_bootstrap: str,
    tidb_url: str,
    kafka_group: str,
    submit: Submit,
) -> None:
    tenant_name, namespace = tenant_namespace
    store = ControlStore(engine=engine)
    tenant, _ = store.create_tenant(tenant_name)
    app = store.create_application(tenant_id=tenant.id, name="shop")
    spec = PipelineSpec(
        name="echo",
        chart="charts/examples/echo",
        scaling={"tasks_per_replica": 5, "max_replicas": 4, "cooldown_s": 600},
    )
    created, token = store.create_pipeline(app=app, spec=spec)
    await KafkaTopicAdmin(bootstrap=kafka_bootstrap).create_pipeline_topic(created.id, 2)
    assert store.mark_ready(created.id, deployment={"status": "deployed", "revision": 1})
    with kube_cluster.api_client() as api:
        k8s.AppsV1Api(api).create_namespaced_deployment(
            namespace, deployment("shop-echo", created.id)
        )
    pipeline = ReadyPipeline(
        id=created.id, token=token, topic=pipeline_topic(created.id), partitions=2
    )
    grpc_port = free_port()
    settings = Settings(
        kafka_bootstrap=kafka_bootstrap,
        database_url=tidb_url,
        grpc_port=grpc_port,
        metrics_port=free_port(),
        replica_name=f"replica-{grpc_port}",
        placement_group=kafka_group,
        autoscaler="builtin",
        kubeconfig=kube_cluster.kubeconfig_path,
        scaler_interval_s=0.2,
    )

    async def scaled_to(expected: int) -> None:
        async with asyncio.timeout(30):
            while replicas(kube_cluster, namespace, "shop-echo") != expected:
                await asyncio.sleep(0.2)

    async with SchedulerHost(settings=settings, rescan_s=1) as host:
        await wait_hosted(host, pipeline.id)
        await submit(pipeline, {f"a-{i}": {"n": i} for i in range(12)})
        await scaled_to(3)  # ceil(12 / 5)
        await submit(pipeline, {f"b-{i}": {"n": i} for i in range(30)})
        await scaled_to(4)  # max_replicas
        async with httpx.AsyncClient() as client:
            text = (await client.get(f"http://127.0.0.1:{settings.metrics_port}/metrics")).text
    samples = {
        (sample.name, sample.labels.get("direction", "")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.labels.get("pipeline", pipeline.id) == pipeline.id
    }
    assert samples[("wsched_scaler_replicas", "")] == 4
    # At least 1 -> 3 and 3 -> 4; more steps if the tasks were admitted in several batches.
    assert samples[("wsched_scaler_changes_total", "up")] >= 2
    assert samples[("wsched_scaler_errors_total", "")] == 0

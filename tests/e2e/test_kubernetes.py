"""The README's "Deploy on Kubernetes" flow as processes: ``wsched api`` with the Helm
deployer and ``wsched scheduler`` with the built-in scaler, on real Kafka, TiDB, helm and
kube-apiserver.

The test cluster has no kubelet, so the workers' pods never run: a stand-in worker drains
the tasks over gRPC, and the test watches what the scaler does to the Deployment helm
installed.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from kubernetes import client as k8s
from prometheus_client.parser import text_string_to_metric_families

from services.infra.kube import KubeCluster
from tests.e2e.conftest import Stack, drain, ok, running_stack, wsched

pytestmark = pytest.mark.integration


@pytest.fixture
def kube_stack(
    kafka_bootstrap: str,
    tidb_url: str,
    kafka_group: str,
    tmp_path: Path,
    kube_cluster: KubeCluster,
    helm_bin: Path,
) -> Iterator[Stack]:
    env = {
        "WSCHED_DEPLOYER": "helm",
        "WSCHED_AUTOSCALER": "builtin",
        "WSCHED_KUBECONFIG": str(kube_cluster.kubeconfig_path),
        "WSCHED_HELM_EXECUTABLE": str(helm_bin),
        "WSCHED_SCALER_INTERVAL_S": "0.3",
        "WSCHED_DATA_DIR": str(tmp_path / "data"),
    }
    with running_stack(
        kafka_bootstrap=kafka_bootstrap,
        tidb_url=tidb_url,
        group=kafka_group,
        logs=tmp_path,
        env=env,
    ) as stack:
        yield stack


def replicas(cluster: KubeCluster, namespace: str, name: str) -> int:
    with cluster.api_client() as api:
        deployment = k8s.AppsV1Api(api).read_namespaced_deployment(name, namespace)
    assert deployment.spec is not None
    return deployment.spec.replicas or 0


async def scaled_to(cluster: KubeCluster, namespace: str, name: str, expected: int) -> None:
    async with asyncio.timeout(60):
        while (current := replicas(cluster, namespace, name)) != expected:
            await asyncio.sleep(0.2)
    assert current == expected


async def test_a_pipeline_deployed_by_helm_scales_with_its_backlog(
    kube_stack: Stack, kube_cluster: KubeCluster
) -> None:
    tenant = f"k{uuid.uuid4().hex[:10]}"
    key = json.loads(ok(wsched(kube_stack, "tenants", "create", tenant)))["api_key"]
    ok(wsched(kube_stack, "apps", "create", "shop", key=key))
    scaling = {
        "min_replicas": 0,
        "max_replicas": 4,
        "tasks_per_replica": 5,
        "idle_s": 1,
        "cooldown_s": 0,
    }
    created = json.loads(
        ok(
            wsched(
                kube_stack,
                "pipelines",
                "create",
                "shop",
                "echo",
                "--chart",
                "charts/examples/echo",
                "--scaling",
                json.dumps(scaling),
                key=key,
            )
        )
    )
    assert created["state"] == "ready"
    shown = json.loads(ok(wsched(kube_stack, "pipelines", "get", "shop", "echo", key=key)))
    release, namespace = f"{tenant}-shop-echo", f"wsched-{tenant}"
    assert shown["deployment"]["status"] == "deployed", shown
    assert (shown["deployment"]["release"], shown["deployment"]["namespace"]) == (
        release,
        namespace,
    )

    # Nothing to do and min_replicas 0: the scaler takes the Deployment to zero.
    await scaled_to(kube_cluster, namespace, release, 0)
    lines = "\n".join(json.dumps({"message": f"m{i}"}) for i in range(12))
    ok(wsched(kube_stack, "tasks", "submit", "shop", "echo", key=key, stdin=lines))
    await scaled_to(kube_cluster, namespace, release, 3)  # ceil(12 / 5)
    # A lower cap, changed live: the release is upgraded (its replicas untouched) and the
    # owning replica reads the new scaling when told of the change.
    capped = wsched(
        kube_stack,
        "pipelines",
        "update",
        "shop",
        "echo",
        "--scaling",
        json.dumps({**scaling, "max_replicas": 2}),
        key=key,
    )
    assert json.loads(ok(capped))["scaling"]["max_replicas"] == 2
    await scaled_to(kube_cluster, namespace, release, 2)
    upgraded = json.loads(ok(wsched(kube_stack, "pipelines", "get", "shop", "echo", key=key)))
    assert upgraded["deployment"]["revision"] == 2
    await drain(kube_stack, created["id"], created["worker_token"], 12)
    await scaled_to(kube_cluster, namespace, release, 0)  # idle again

    async with httpx.AsyncClient() as client:
        metrics = (await client.get(kube_stack.metrics)).text
    changes = {
        sample.labels["direction"]: sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.name == "wsched_scaler_changes_total"
        and sample.labels["pipeline"] == created["id"]
    }
    # Up to 3 and down to 0 twice, perhaps by steps as tasks are admitted and as the
    # stand-in worker's reports arrive.
    assert changes["up"] >= 1
    assert changes["down"] >= 2

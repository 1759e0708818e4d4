"""The scheduler chart's own processes, run as its pods would run them.

No kubelet runs here, so this test plays its part: it renders charts/workload-scheduler
with helm, and for the migration Job, the API and the scheduler runs the container's
``wsched`` arguments with exactly the environment the pod would get — literal values,
Secret references resolved from the rendered Secrets, field references (pod name, pod IP)
and ``$(VAR)`` expansion, as Kubernetes does them — against real Kafka and TiDB. The
migrations must apply, both services must turn ready, and the operator key from the
chart's Secret must create a tenant. With the chart's defaults (the Helm deployer and the
built-in scaler, pointed at the test cluster by a kubeconfig instead of a service
account), a pipeline created through that API is installed as a Helm release.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from services.infra.kube import KubeCluster
from services.infra.process import Service, free_port
from tests.integration.charts.rendering import CHARTS, render_all

pytestmark = pytest.mark.integration

RELEASE = "wsched"
NAMESPACE = "wsched-system"


def pod_env(
    container: Mapping[str, Any], secrets: Mapping[str, Mapping[str, str]], pod_name: str
) -> dict[str, str]:
    """The container's environment as the kubelet builds it, in order."""
    fields = {"metadata.name": pod_name, "status.podIP": "127.0.0.1"}
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            # $(NAME) names a variable declared before this one.
            value = re.sub(
                r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                lambda m: env.get(m.group(1), m.group(0)),
                str(item["value"]),
            )
        elif "secretKeyRef" in item["valueFrom"]:
            ref = item["valueFrom"]["secretKeyRef"]
            value = secrets[ref["name"]][ref["key"]]
        else:
            value = fields[item["valueFrom"]["fieldRef"]["fieldPath"]]
        env[item["name"]] = value
    return env


def secret_data(doc: Mapping[str, Any]) -> dict[str, str]:
    data = {k: base64.b64decode(v).decode() for k, v in (doc.get("data") or {}).items()}
    return {**data, **(doc.get("stringData") or {})}


@pytest.fixture
def migrated_nothing(tidb_url: str) -> str:
    """A fresh TiDB database with no tables: the chart's migration Job makes them."""
    engine = sa.create_engine(tidb_url)
    try:
        with engine.connect() as conn:
            assert not sa.inspect(conn).get_table_names()
    finally:
        engine.dispose()
    return tidb_url


@pytest.fixture
def processes() -> Iterator[list[Service]]:
    started: list[Service] = []
    yield started
    for service in reversed(started):
        service.stop()


def apply_cluster_roles(cluster: KubeCluster, docs: list[dict[str, Any]]) -> None:
    """The chart's ClusterRoles in the cluster, as ``helm install`` makes them: the API's
    helm acts as each tenant's account, bound to the chart's tenant role."""
    with cluster.api_client() as api:
        rbac = k8s.RbacAuthorizationV1Api(api)
        for doc in docs:
            if doc["kind"] != "ClusterRole":
                continue
            name = doc["metadata"]["name"]
            body: Any = {"metadata": {"name": name}, "rules": doc.get("rules", [])}
            try:
                rbac.create_cluster_role(body)
            except ApiException as err:
                if err.status != 409:  # HTTP Conflict: it exists
                    raise
                rbac.replace_cluster_role(name, body)


async def test_the_charts_processes_start_with_the_environment_it_renders(
    helm_bin: Path,
    kafka_bootstrap: str,
    migrated_nothing: str,
    kafka_group: str,
    tmp_path: Path,
    processes: list[Service],
    kube_cluster: KubeCluster,
) -> None:
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    operator_key = f"op-{time.monotonic_ns()}"
    # Ports moved off the chart's fixed ones (this machine runs other tests), through the
    # chart's own extraEnv, which comes after (and so wins over) the chart's variables.
    values: dict[str, Any] = {
        "kafka": {"bootstrap": kafka_bootstrap},
        "database": {"url": migrated_nothing},
        "auth": {"operatorKey": operator_key, "secretKey": Fernet.generate_key().decode()},
        "extraEnv": [
            {"name": "WSCHED_PLACEMENT_GROUP", "value": kafka_group},
            {"name": "WSCHED_DATA_DIR", "value": str(tmp_path / "data")},
            # In a pod: the service account, and helm from the image.
            {"name": "WSCHED_KUBECONFIG", "value": str(kube_cluster.kubeconfig_path)},
            {"name": "WSCHED_HELM_EXECUTABLE", "value": str(helm_bin)},
            {"name": "HOME", "value": str(tmp_path / "home")},
        ],
        "api": {"extraEnv": [{"name": "WSCHED_HTTP_PORT", "value": str(http_port)}]},
        "scheduler": {
            "extraEnv": [
                {"name": "WSCHED_GRPC_PORT", "value": str(grpc_port)},
                {"name": "WSCHED_GRPC_ADVERTISE", "value": f"$(POD_IP):{grpc_port}"},
                {"name": "WSCHED_METRICS_PORT", "value": str(metrics_port)},
            ]
        },
    }
    docs = await render_all(
        helm_bin, CHARTS / "workload-scheduler", values, release=RELEASE, namespace=NAMESPACE
    )
    apply_cluster_roles(kube_cluster, docs)
    secrets = {d["metadata"]["name"]: secret_data(d) for d in docs if d["kind"] == "Secret"}
    workloads = {
        d["metadata"]["name"]: d["spec"]["template"]["spec"]["containers"][0]
        for d in docs
        if d["kind"] in ("Deployment", "Job")
    }
    [helm_test] = [
        d["spec"]["containers"][0]
        for d in docs
        if d["kind"] == "Pod" and d["metadata"]["annotations"]["helm.sh/hook"] == "test"
    ]
    migrations = workloads[f"{RELEASE}-migrations"]
    api = workloads[f"{RELEASE}-api"]
    scheduler = workloads[f"{RELEASE}-scheduler"]

    def run(name: str, container: Mapping[str, Any]) -> Service:
        service = Service(
            name=name,
            argv=[sys.executable, "-m", "services.cli", *container["args"]],
            log_path=tmp_path / f"{name}.log",
            env=pod_env(container, secrets, pod_name=f"{name}-0"),
        )
        processes.append(service)
        service.start()
        return service

    job = run("migrations", migrations)
    async with asyncio.timeout(120):
        while job.running():
            await asyncio.sleep(0.2)
    engine = sa.create_engine(migrated_nothing)
    try:
        with engine.connect() as conn:
            assert {"tenants", "pipelines", "tasks"} <= set(sa.inspect(conn).get_table_names())
    finally:
        engine.dispose()

    run("api", api)
    run("scheduler", scheduler)
    base = f"http://127.0.0.1:{http_port}"
    async with httpx.AsyncClient(timeout=5) as client:
        for url in (
            f"http://127.0.0.1:{http_port}/readyz",
            f"http://127.0.0.1:{metrics_port}/readyz",
        ):
            await ready(client, url, processes)
        tenant = f"chart{uuid.uuid4().hex[:8]}"
        created = await client.post(
            f"{base}/api/tenants",
            json={"name": tenant},
            headers={"Authorization": f"Bearer {operator_key}"},
        )
        assert created.status_code == 201, created.text
        tenant_key = {"Authorization": f"Bearer {created.json()['api_key']}"}
        app = await client.post(
            f"{base}/api/applications", json={"name": "shop"}, headers=tenant_key
        )
        assert app.status_code == 201, app.text
        pipeline = await client.post(
            f"{base}/api/applications/shop/pipelines",
            json={"name": "echo", "chart": "charts/examples/echo"},
            headers=tenant_key,
        )
        assert pipeline.status_code == 201, pipeline.text
        async with asyncio.timeout(60):
            while (
                shown := (
                    await client.get(
                        f"{base}/api/applications/shop/pipelines/echo", headers=tenant_key
                    )
                ).json()
            )["state"] == "provisioning":
                await asyncio.sleep(0.3)
        metrics = (await client.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
    # `helm test`: its pod's script, with the Services' DNS names pointed at the processes.
    passed = await run_helm_test(
        helm_test, api=base, scheduler=f"127.0.0.1:{grpc_port}", release=RELEASE
    )
    assert passed.returncode == 0, passed.stdout
    assert "API /readyz: 200" in passed.stdout and "accepts connections" in passed.stdout
    refused = await run_helm_test(
        helm_test, api=base, scheduler=f"127.0.0.1:{free_port()}", release=RELEASE
    )
    assert refused.returncode != 0, refused.stdout
    assert shown["state"] == "ready", (shown.get("state_reason"), shown.get("deployment"))
    deployment = shown["deployment"]
    assert (deployment["status"], deployment["release"], deployment["namespace"]) == (
        "deployed",
        f"{tenant}-shop-echo",
        f"wsched-{tenant}",
    )
    with kube_cluster.api_client() as kube:
        workers = k8s.AppsV1Api(kube).read_namespaced_deployment(
            f"{tenant}-shop-echo", f"wsched-{tenant}"
        )
    assert workers.metadata is not None and workers.metadata.labels is not None
    assert workers.metadata.labels["wsched.io/pipeline-id"] == shown["id"]
    assert "wsched_active_grains" in metrics


async def run_helm_test(
    container: Mapping[str, Any], *, api: str, scheduler: str, release: str
) -> subprocess.CompletedProcess[str]:
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["WSCHED_TEST_API"] == f"http://{release}-api.{NAMESPACE}.svc:8080"
    assert env["WSCHED_TEST_SCHEDULER"] == f"{release}-scheduler.{NAMESPACE}.svc:50051"
    assert container["command"][0] == "python"
    argv = [sys.executable, *container["command"][1:], *container["args"]]
    local = {**os.environ, "WSCHED_TEST_API": api, "WSCHED_TEST_SCHEDULER": scheduler}
    process = await asyncio.create_subprocess_exec(
        *argv, env=local, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await process.communicate()
    assert process.returncode is not None
    return subprocess.CompletedProcess(argv, process.returncode, out.decode(), "")


async def ready(client: httpx.AsyncClient, url: str, processes: list[Service]) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        for service in processes[1:]:
            assert service.running(), f"{service.name} exited:\n{service.log_tail()}"
        try:
            if (await client.get(url)).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.3)
    raise AssertionError(f"{url} not ready within 90 s")

"""The Helm deployer through the API: real helm, a real kube-apiserver, Kafka and TiDB.

No kubelet or controller-manager runs, so pods never start: the tests check what helm
put in the cluster (the release, its Deployment, its Secret), never running workers.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import http.server
import json
import shutil
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from services.infra.kube import KubeCluster
from services.infra.registry import OciRegistry
from services.settings import Settings
from tests.integration.api.conftest import IMAGE, LIMITS, REPO, SCHEDULER
from tests.unit.services.api.harness import Api, bearer, running_api

pytestmark = pytest.mark.integration

ECHO = REPO / "charts" / "examples" / "echo"


def unique_tenant() -> str:
    return f"h{uuid.uuid4().hex[:10]}"


def helm_json(helm_bin: Path, cluster: KubeCluster, *args: str) -> Any:
    done = subprocess.run(
        [str(helm_bin), *args, "--output", "json", "--kubeconfig", str(cluster.kubeconfig_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout)


def helm_run(helm_bin: Path, cluster: KubeCluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(helm_bin), *args, "--kubeconfig", str(cluster.kubeconfig_path)],
        capture_output=True,
        text=True,
        check=False,
    )


async def create(api: Api, key: str, name: str, **fields: Any) -> dict[str, Any]:
    answer = await api.client.post(
        "/api/applications/shop/pipelines",
        json={"name": name, "chart": str(ECHO), **fields},
        headers=bearer(key),
    )
    assert answer.status_code == 201, answer.text
    created: dict[str, Any] = answer.json()
    # The API answered before helm ran: the deployment is pending.
    assert created["state"] == "provisioning"
    assert created["deployment"]["status"] == "pending"
    await api.settled()
    return {**(await get(api, key, name)), "worker_token": created["worker_token"]}


async def get(api: Api, key: str, name: str) -> dict[str, Any]:
    answer = await api.client.get(f"/api/applications/shop/pipelines/{name}", headers=bearer(key))
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()
    return found


async def tenant_with_app(api: Api) -> tuple[str, str]:
    tenant = unique_tenant()
    key = await api.tenant(tenant)
    await api.application(key, "shop")
    return tenant, key


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container["env"] or []}


def read_deployment(api: k8s.ApiClient, name: str, namespace: str) -> dict[str, Any]:
    found: dict[str, Any] = k8s.AppsV1Api(api).read_namespaced_deployment(name, namespace).to_dict()
    return found


def containers(deployment: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in deployment["spec"]["template"]["spec"]["containers"]}


async def test_a_pipeline_is_installed_upgraded_and_uninstalled(
    helm_api: Api, kube: k8s.ApiClient, helm_bin: Path, kube_cluster: KubeCluster
) -> None:
    tenant, key = await tenant_with_app(helm_api)
    pipeline = await create(helm_api, key, "echo", values={"agent": {"concurrency": 2}})
    release, namespace = f"{tenant}-shop-echo", f"wsched-{tenant}"
    assert pipeline["state"] == "ready", pipeline
    deployment = pipeline["deployment"]
    assert (deployment["status"], deployment["revision"], deployment["deployer"]) == (
        "deployed",
        1,
        "helm",
    )
    assert (deployment["release"], deployment["namespace"]) == (release, namespace)

    core, apps = k8s.CoreV1Api(kube), k8s.AppsV1Api(kube)
    labels = core.read_namespace(namespace).to_dict()["metadata"]["labels"]
    assert labels["wsched.io/tenant"] == tenant
    assert labels["app.kubernetes.io/managed-by"] == "workload-scheduler"

    workers = read_deployment(kube, release, namespace)
    assert workers["metadata"]["labels"]["wsched.io/pipeline-id"] == pipeline["id"]
    # The built-in scaler owns the replicas: the chart leaves them out (the API server
    # defaults them to 1), so that an upgrade never resets what the scaler set.
    assert workers["spec"]["replicas"] == 1
    by_name = containers(workers)
    assert set(by_name) == {"agent", "executor-echo"}
    volumes = {v["name"]: v for v in workers["spec"]["template"]["spec"]["volumes"]}
    assert volumes["pipe"]["empty_dir"] is not None
    for container in by_name.values():
        assert "/mnt/pipe" in {m["mount_path"] for m in container["volume_mounts"]}
    agent = env_of(by_name["agent"])
    assert agent["WSCHED_WORKER_SCHEDULER"]["value"] == SCHEDULER
    assert agent["WSCHED_WORKER_PIPELINE_ID"]["value"] == pipeline["id"]
    assert agent["WSCHED_WORKER_CONCURRENCY"]["value"] == "2"
    assert by_name["agent"]["image"] == IMAGE
    token_ref = agent["WSCHED_WORKER_TOKEN"]["value_from"]["secret_key_ref"]
    secret = core.read_namespaced_secret(token_ref["name"], namespace).to_dict()
    token = base64.b64decode(secret["data"][token_ref["key"]]).decode()
    assert token == pipeline["worker_token"]

    # PATCH upgrades the release: a new revision with the new values.
    patched = await helm_api.client.patch(
        "/api/applications/shop/pipelines/echo",
        json={"values": {"agent": {"concurrency": 3}}},
        headers=bearer(key),
    )
    assert patched.status_code == 200, patched.text
    await helm_api.settled()
    upgraded = await get(helm_api, key, "echo")
    assert (upgraded["deployment"]["status"], upgraded["deployment"]["revision"]) == (
        "deployed",
        2,
    )
    status = helm_json(helm_bin, kube_cluster, "status", release, "--namespace", namespace)
    assert (status["version"], status["info"]["status"]) == (2, "deployed")
    agent = env_of(containers(read_deployment(kube, release, namespace))["agent"])
    assert agent["WSCHED_WORKER_CONCURRENCY"]["value"] == "3"

    # DELETE uninstalls it: the release, its Deployment and its token Secret are gone.
    deleted = await helm_api.client.delete(
        "/api/applications/shop/pipelines/echo", headers=bearer(key)
    )
    assert deleted.status_code == 202, deleted.text
    await helm_api.settled()
    gone = await helm_api.client.get("/api/applications/shop/pipelines/echo", headers=bearer(key))
    assert gone.status_code == 404, gone.text
    missing = helm_run(helm_bin, kube_cluster, "status", release, "--namespace", namespace)
    assert missing.returncode != 0 and "not found" in missing.stderr
    for read in (
        functools.partial(apps.read_namespaced_deployment, release, namespace),
        functools.partial(core.read_namespaced_secret, token_ref["name"], namespace),
    ):
        with pytest.raises(ApiException) as err:
            read()
        assert err.value.status == 404


async def test_a_broken_chart_fails_with_helms_message_and_the_api_answers(
    helm_api: Api, tmp_path: Path
) -> None:
    chart = tmp_path / "broken"
    shutil.copytree(ECHO, chart)
    (chart / "Chart.yaml").write_text(
        (chart / "Chart.yaml")
        .read_text()
        .replace("../../pipeline-lib", str(ECHO.parent.parent / "pipeline-lib"))
    )
    (chart / "templates" / "broken.yaml").write_text(
        '{{ fail "this chart is broken on purpose" }}\n'
    )
    _, key = await tenant_with_app(helm_api)
    pipeline = await create(helm_api, key, "broken", chart=str(chart))
    assert pipeline["state"] == "failed", pipeline
    assert "this chart is broken on purpose" in pipeline["reason"]
    assert pipeline["deployment"]["status"] == "failed"
    assert "this chart is broken on purpose" in pipeline["deployment"]["detail"]
    # The API still answers, and the failure is counted.
    listed = await helm_api.client.get("/api/applications/shop/pipelines", headers=bearer(key))
    assert listed.status_code == 200, listed.text
    metrics = (await helm_api.client.get("/metrics")).text
    assert 'wsched_deploys_total{result="failed"} 1.0' in metrics
    assert (
        f'wsched_pipeline_deployment_revision{{pipeline="{pipeline["id"]}",status="failed"}}'
        in metrics
    )


async def test_a_release_deleted_behind_its_back_is_deployed_again_at_start(
    helm_settings: Settings, helm_bin: Path, kube_cluster: KubeCluster
) -> None:
    async with running_api(helm_settings, limits=LIMITS) as api:
        tenant, key = await tenant_with_app(api)
        pipeline = await create(api, key, "echo")
        assert pipeline["state"] == "ready", pipeline
    release, namespace = f"{tenant}-shop-echo", f"wsched-{tenant}"
    removed = helm_run(helm_bin, kube_cluster, "uninstall", release, "--namespace", namespace)
    assert removed.returncode == 0, removed.stderr

    async with running_api(helm_settings, limits=LIMITS) as api:
        redeployed = await wait_for_status(helm_bin, kube_cluster, release, namespace)
        assert redeployed["info"]["status"] == "deployed"
        await api.settled()
        after = await get(api, key, "echo")
        assert after["state"] == "ready"
        assert (after["deployment"]["status"], after["deployment"]["revision"]) == (
            "deployed",
            1,  # a new release: helm counts from 1 again
        )


async def test_a_chart_from_a_chart_repository(
    helm_settings: Settings, helm_bin: Path, kube_cluster: KubeCluster, tmp_path: Path
) -> None:
    """``chart`` names a chart repository URL and the chart, with ``chart_version``, from
    a repository the operator allows."""
    with chart_repository(helm_bin, tmp_path) as url:
        allowing = helm_settings.model_copy(update={"chart_repositories": [url]})
        async with running_api(allowing, limits=LIMITS) as helm_api:
            tenant, key = await tenant_with_app(helm_api)
            pipeline = await create(
                helm_api, key, "remote", chart=f"{url}/echo", chart_version="0.1.0"
            )
    assert pipeline["state"] == "ready", pipeline
    assert "chart echo 0.1.0" in pipeline["deployment"]["detail"]
    status = helm_json(
        helm_bin, kube_cluster, "status", f"{tenant}-shop-remote", "--namespace", f"wsched-{tenant}"
    )
    assert status["info"]["status"] == "deployed"


async def test_a_chart_from_an_oci_registry(
    helm_settings: Settings,
    helm_bin: Path,
    kube_cluster: KubeCluster,
    oci_registry: OciRegistry,
    tmp_path: Path,
) -> None:
    """``chart`` is an ``oci://`` reference with ``chart_version``, pushed with helm."""
    archive = packaged_echo(helm_bin, tmp_path, tmp_path / "out")
    path = f"{oci_registry.address}/{uuid.uuid4().hex[:8]}/charts"
    pushed = await asyncio.create_subprocess_exec(
        str(helm_bin), "push", str(archive), f"oci://{path}", stderr=asyncio.subprocess.PIPE
    )
    _, err = await pushed.communicate()
    assert pushed.returncode == 0, err
    allowing = helm_settings.model_copy(update={"chart_repositories": [f"oci://{path}"]})
    async with running_api(allowing, limits=LIMITS) as helm_api:
        await from_oci(helm_api, helm_bin, kube_cluster, path)


async def from_oci(helm_api: Api, helm_bin: Path, kube_cluster: KubeCluster, path: str) -> None:
    tenant, key = await tenant_with_app(helm_api)
    pipeline = await create(
        helm_api, key, "from-oci", chart=f"oci://{path}/echo", chart_version="0.1.0"
    )
    assert pipeline["state"] == "ready", pipeline
    assert "chart echo 0.1.0" in pipeline["deployment"]["detail"]
    status = helm_json(
        helm_bin,
        kube_cluster,
        "status",
        f"{tenant}-shop-from-oci",
        "--namespace",
        f"wsched-{tenant}",
    )
    assert status["info"]["status"] == "deployed"
    # A version the registry does not have fails the pipeline with helm's words.
    missing = await create(
        helm_api, key, "missing", chart=f"oci://{path}/echo", chart_version="9.9.9"
    )
    assert missing["state"] == "failed", missing
    assert "9.9.9" in missing["reason"] and "not found" in missing["reason"]


async def wait_for_status(
    helm_bin: Path, cluster: KubeCluster, release: str, namespace: str, timeout_s: float = 60
) -> Any:
    async with asyncio.timeout(timeout_s):
        while True:
            found = helm_run(helm_bin, cluster, "status", release, "--namespace", namespace)
            if found.returncode == 0:
                return helm_json(helm_bin, cluster, "status", release, "--namespace", namespace)
            await asyncio.sleep(0.5)


def packaged_echo(helm_bin: Path, work: Path, destination: Path) -> Path:
    """The echo chart as an archive (``echo-0.1.0.tgz``) in ``destination``."""
    source = work / "src"
    shutil.copytree(ECHO.parent.parent, source)
    chart = source / "examples" / "echo"
    destination.mkdir(parents=True, exist_ok=True)
    for args in (
        ["dependency", "build", str(chart)],
        ["package", str(chart), "--destination", str(destination)],
    ):
        subprocess.run([str(helm_bin), *args], check=True, capture_output=True)
    return destination / "echo-0.1.0.tgz"


@contextlib.contextmanager
def chart_repository(helm_bin: Path, work: Path) -> Iterator[str]:
    """The echo chart packaged into a chart repository served over HTTP."""
    served = work / "repo"
    packaged_echo(helm_bin, work, served)
    subprocess.run([str(helm_bin), "repo", "index", str(served)], check=True, capture_output=True)
    handler = functools.partial(_QuietHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return

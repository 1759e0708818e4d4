"""The kubernetes client and helm against a real kube-apiserver + etcd."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pyhelm3
import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from services.infra.kube import KubeCluster

pytestmark = pytest.mark.integration

CHART = Path(__file__).parents[1] / "data" / "charts" / "hello"
RELEASE_SECRET_TYPE = "helm.sh/release.v1"


def _deployment(name: str, *, replicas: int, image: str) -> k8s.V1Deployment:
    labels = {"app": name}
    container = k8s.V1Container(name=name, image=image)
    return k8s.V1Deployment(
        metadata=k8s.V1ObjectMeta(name=name, labels=labels),
        spec=k8s.V1DeploymentSpec(
            replicas=replicas,
            selector=k8s.V1LabelSelector(match_labels=labels),
            template=k8s.V1PodTemplateSpec(
                metadata=k8s.V1ObjectMeta(labels=labels),
                spec=k8s.V1PodSpec(containers=[container]),
            ),
        ),
    )


def _wire(
    obj: k8s.V1Deployment | k8s.V1Namespace | k8s.V1NamespaceList | k8s.V1SecretList,
) -> dict[str, Any]:
    """The object as the API serves it (camelCase keys), free of the models' Optionals."""
    return obj.to_dict(serialize=True)


def _release_secrets(api: k8s.ApiClient, namespace: str, release: str) -> list[str]:
    secrets = k8s.CoreV1Api(api).list_namespaced_secret(
        namespace, field_selector=f"type={RELEASE_SECRET_TYPE}", label_selector=f"name={release}"
    )
    return [item["metadata"]["name"] for item in _wire(secrets)["items"]]


def test_server_reports_pinned_version(kube_cluster: KubeCluster) -> None:
    with kube_cluster.api_client() as api:
        version = k8s.VersionApi(api).get_code()

    assert (version.git_version, version.major, version.minor) == ("v1.34.3", "1", "34")


def test_namespace_create_and_read(kube_cluster: KubeCluster) -> None:
    name = f"test-{uuid.uuid4().hex[:12]}"
    with kube_cluster.api_client() as api:
        core = k8s.CoreV1Api(api)
        core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name)))
        try:
            namespace = _wire(core.read_namespace(name))
            listed = _wire(core.list_namespace())
        finally:
            core.delete_namespace(name)

    assert namespace["status"]["phase"] == "Active"
    assert name in [item["metadata"]["name"] for item in listed["items"]]


def test_deployment_create_and_read(kube_cluster: KubeCluster, kube_namespace: str) -> None:
    with kube_cluster.api_client() as api:
        apps = k8s.AppsV1Api(api)
        apps.create_namespaced_deployment(
            kube_namespace, _deployment("web", replicas=2, image="registry.k8s.io/pause:3.10")
        )
        deployment = _wire(apps.read_namespaced_deployment("web", kube_namespace))

    assert deployment["metadata"]["namespace"] == kube_namespace
    assert deployment["spec"]["replicas"] == 2
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "registry.k8s.io/pause:3.10"


async def test_helm_install_then_uninstall(
    kube_cluster: KubeCluster, kube_namespace: str, helm_bin: Path
) -> None:
    helm = pyhelm3.Client(executable=str(helm_bin), kubeconfig=kube_cluster.kubeconfig_path)
    chart = await helm.get_chart(CHART)

    # Never wait=True: with no kubelet or controller-manager nothing becomes ready.
    revision = await helm.install_or_upgrade_release(
        "hello", chart, {"replicaCount": 2}, namespace=kube_namespace, create_namespace=False
    )

    assert (revision.revision, revision.status) == (1, pyhelm3.ReleaseRevisionStatus.DEPLOYED)
    with kube_cluster.api_client() as api:
        apps = k8s.AppsV1Api(api)
        deployment = _wire(apps.read_namespaced_deployment("hello-hello", kube_namespace))
        assert deployment["spec"]["replicas"] == 2
        assert deployment["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
        assert _release_secrets(api, kube_namespace, "hello") == ["sh.helm.release.v1.hello.v1"]

    await helm.uninstall_release("hello", namespace=kube_namespace)

    with kube_cluster.api_client() as api:
        with pytest.raises(ApiException) as gone:
            k8s.AppsV1Api(api).read_namespaced_deployment("hello-hello", kube_namespace)
        assert gone.value.status == 404
        assert _release_secrets(api, kube_namespace, "hello") == []

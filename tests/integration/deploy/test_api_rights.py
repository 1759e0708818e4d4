"""The Helm deployer needs no more than the scheduler chart gives the API: run as a user
bound only to the chart's rendered API ClusterRole, it prepares tenant namespaces and
installs a chart (acting as the tenant) and deletes a tenant (its releases, then its
namespace), while a chart still cannot read a Secret the API itself cannot read either."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from cryptography.fernet import Fernet
from kubernetes import client as k8s

from services.deploy.helm import ChartAllowList, HelmDeployer, HelmOptions, names_from_store
from services.deploy.naming import namespace_for
from services.deploy.ports import DeployFailed
from services.deploy.tenancy import TenantPolicy
from services.infra.kube import KubeCluster
from services.store import migrate
from services.store.control import ControlStore, PipelineSpec
from services.store.tokens import TokenCipher

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "charts" / "workload-scheduler"


@pytest.fixture
def store(sqlite_url: str) -> Iterator[ControlStore]:
    engine = sa.create_engine(sqlite_url)
    migrate.upgrade(engine)
    yield ControlStore(engine=engine, cipher=TokenCipher(key=Fernet.generate_key()))
    engine.dispose()


def chart_roles(helm_bin: Path, namespace: str) -> dict[str, Any]:
    """The scheduler chart's ClusterRoles as it renders them for ``namespace``."""
    rendered = subprocess.run(
        [
            str(helm_bin),
            "template",
            "t",
            str(CHART),
            "--namespace",
            namespace,
            "-f",
            str(CHART / "ci" / "required-values.yaml"),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {
        doc["metadata"]["name"]: doc
        for doc in yaml.safe_load_all(rendered)
        if doc and doc["kind"] == "ClusterRole"
    }


async def bound(kube: k8s.ApiClient, user: str) -> None:
    """RBAC's caches follow a new binding within moments: wait for it."""
    review: Any = {
        "spec": {
            "user": user,
            "resourceAttributes": {"verb": "create", "resource": "namespaces"},
        }
    }
    for _ in range(50):
        answer = k8s.AuthorizationV1Api(kube).create_subject_access_review(review)
        if answer.status is not None and answer.status.allowed:
            return
        await asyncio.sleep(0.1)
    pytest.fail("the API user's ClusterRoleBinding never took effect")


@pytest.fixture
async def api_kubeconfig(kube_cluster: KubeCluster, helm_bin: Path) -> tuple[Path, str]:
    """A kubeconfig with the chart's API rights only, and the chart's tenant ClusterRole."""
    namespace = f"wsched-{uuid.uuid4().hex[:8]}"
    roles = chart_roles(helm_bin, namespace)
    api_role, tenant_role = f"{namespace}-t-wsched-api", f"{namespace}-t-wsched-tenant"
    user = f"api-{namespace}"
    with kube_cluster.api_client() as kube:
        rbac = k8s.RbacAuthorizationV1Api(kube)
        for name in (api_role, tenant_role):
            role: Any = {"metadata": {"name": name}, "rules": roles[name]["rules"]}
            rbac.create_cluster_role(role)
        binding: Any = {
            "metadata": {"name": api_role},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": api_role,
            },
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
        }
        rbac.create_cluster_role_binding(binding)
        await bound(kube, user)
    return kube_cluster.user_kubeconfig(user), tenant_role


async def test_the_api_deploys_with_the_charts_rights_alone(
    store: ControlStore,
    kube_cluster: KubeCluster,
    helm_bin: Path,
    tmp_path: Path,
    api_kubeconfig: tuple[Path, str],
) -> None:
    kubeconfig, tenant_role = api_kubeconfig
    deployer = HelmDeployer(
        options=HelmOptions(
            scheduler="wsched-scheduler:50051",
            base_dir=REPO,
            charts=ChartAllowList(
                roots=[REPO / "charts", REPO / "tests" / "data" / "charts"],
                repositories=[],
                base_dir=REPO,
            ),
            work_dir=tmp_path,
            executable=str(helm_bin),
            kubeconfig=kubeconfig,
            timeout_s=30,
            tenants=TenantPolicy(cluster_role=tenant_role, quota={"pods": "5"}),
        ),
        token_of=store.worker_token,
        names_of=names_from_store(store.pipeline_names),
    )
    tenant, _ = store.create_tenant(f"r{uuid.uuid4().hex[:10]}")
    app = store.create_application(tenant_id=tenant.id, name="a")

    echo, _ = store.create_pipeline(
        app=app, spec=PipelineSpec(name="echo", chart="charts/examples/echo")
    )
    status = await deployer.deploy(echo)
    assert status.status == "deployed"
    assert await deployer.in_place(echo)

    with kube_cluster.api_client() as kube:
        kept = f"kept-{uuid.uuid4().hex[:8]}"
        secret: Any = {"metadata": {"name": kept}, "stringData": {"key": "secret"}}
        k8s.CoreV1Api(kube).create_namespaced_secret("default", secret)
    lookup, _ = store.create_pipeline(
        app=app,
        spec=PipelineSpec(
            name="lookup",
            chart="tests/data/charts/rogue-lookup",
            values={"target": {"namespace": "default", "name": kept}},
        ),
    )
    with pytest.raises(DeployFailed, match="forbidden"):
        await deployer.deploy(lookup)

    privileged, _ = store.create_pipeline(
        app=app,
        spec=PipelineSpec(
            name="priv", chart="tests/data/charts/rogue-pod", values={"privileged": True}
        ),
    )
    with pytest.raises(DeployFailed, match="violates PodSecurity"):
        await deployer.deploy(privileged)

    # Deleting the tenant, as the tenant-deletion worker does: every release first (the
    # failed ones too), then the namespace, all under the chart's rights alone.
    for pipeline in (echo, lookup, privileged):
        await deployer.remove(pipeline)
    assert not await deployer.in_place(echo)
    namespace = namespace_for(tenant.name)
    with kube_cluster.api_client() as kube:
        core = k8s.CoreV1Api(kube)
        left = core.list_namespaced_secret(namespace, label_selector="owner=helm").items
        assert left == []  # no release records: every release was uninstalled
        # A namespace we did not prepare is never deleted, even if asked by name.
        stranger = f"stranger-{uuid.uuid4().hex[:8]}"
        body: Any = {"metadata": {"name": stranger}}
        core.create_namespace(body)
    await deployer.remove_tenant(stranger)
    await deployer.remove_tenant(namespace)
    with kube_cluster.api_client() as kube:
        core = k8s.CoreV1Api(kube)
        theirs: Any = core.read_namespace(stranger)
        assert theirs.metadata.deletion_timestamp is None
        # No namespace controller runs in the test cluster, so it stays Terminating.
        ours: Any = core.read_namespace(namespace)
        assert ours.metadata.deletion_timestamp is not None
        assert ours.status.phase == "Terminating"
        core.delete_namespace(stranger)

"""A tenant's chart is contained: real helm, a real kube-apiserver with its RBAC and Pod
Security admission, and the malicious charts in tests/data/charts/rogue-*."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pyhelm3
import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet
from kubernetes import client as k8s

from services.deploy.helm import ChartAllowList, HelmDeployer, HelmOptions, names_from_store
from services.deploy.ports import DeployFailed
from services.deploy.tenancy import OWNED, PSA_ENFORCE, TenantPolicy
from services.infra.kube import KubeCluster
from services.store import migrate
from services.store.control import ControlStore, Pipeline, PipelineSpec
from services.store.tokens import TokenCipher

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
ROGUE = REPO / "tests" / "data" / "charts"
SERIALIZER = k8s.ApiClient()
POLICY = TenantPolicy(
    quota={"pods": "10", "requests.cpu": "2", "limits.memory": "4Gi"},
    default_limits={"cpu": "500m", "memory": "256Mi"},
    default_requests={"cpu": "50m", "memory": "64Mi"},
    scheduler_namespace="wsched-system",
    scheduler_pod_labels={"app.kubernetes.io/component": "scheduler"},
    scheduler_port=50051,
)


@pytest.fixture
def store(sqlite_url: str) -> Iterator[ControlStore]:
    engine = sa.create_engine(sqlite_url)
    migrate.upgrade(engine)
    yield ControlStore(engine=engine, cipher=TokenCipher(key=Fernet.generate_key()))
    engine.dispose()


@pytest.fixture
def kube(kube_cluster: KubeCluster) -> Iterator[k8s.ApiClient]:
    with kube_cluster.api_client() as api:
        yield api


@pytest.fixture
def deployer(
    store: ControlStore, kube_cluster: KubeCluster, helm_bin: Path, tmp_path: Path
) -> HelmDeployer:
    return HelmDeployer(
        options=HelmOptions(
            scheduler="wsched-scheduler.wsched-system.svc:50051",
            base_dir=REPO,
            charts=ChartAllowList(
                roots=[REPO / "charts" / "examples", REPO / "charts" / "pipeline-lib", ROGUE],
                repositories=["oci://registry.example.com/pipelines"],
                base_dir=REPO,
            ),
            work_dir=tmp_path,
            executable=str(helm_bin),
            kubeconfig=kube_cluster.kubeconfig_path,
            timeout_s=30,
            tenants=POLICY,
        ),
        token_of=store.worker_token,
        names_of=names_from_store(store.pipeline_names),
    )


def wire(obj: Any) -> dict[str, Any]:
    """The object as the API serves it: camelCase keys, unset fields left out."""
    found: dict[str, Any] = SERIALIZER.sanitize_for_serialization(obj)  # type: ignore[no-untyped-call]
    return found


def pipeline_of(
    store: ControlStore, chart: str, values: Mapping[str, Any] | None = None
) -> Pipeline:
    tenant, _ = store.create_tenant(f"c{uuid.uuid4().hex[:10]}")
    app = store.create_application(tenant_id=tenant.id, name="a")
    spec = PipelineSpec(name="p", chart=chart, values=dict(values or {}))
    return store.create_pipeline(app=app, spec=spec)[0]


def namespace_of(pipeline: Pipeline, store: ControlStore) -> str:
    names = names_from_store(store.pipeline_names)(pipeline.id)
    assert names is not None
    return names.namespace


async def refused(deployer: HelmDeployer, pipeline: Pipeline) -> str:
    with pytest.raises(DeployFailed) as failed:
        await deployer.deploy(pipeline)
    reason = str(failed.value)
    # The chart as the tenant gave it is there; no path of this machine besides.
    rest = reason.replace(repr(pipeline.chart), "")
    assert all(path not in rest for path in (str(REPO), "/tmp", "/etc", "/root")), reason
    return reason


async def test_a_chart_cannot_lookup_a_secret_of_another_namespace(
    store: ControlStore, deployer: HelmDeployer, kube: k8s.ApiClient
) -> None:
    core = k8s.CoreV1Api(kube)
    system = f"wsched-system-{uuid.uuid4().hex[:6]}"
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=system)))
    secret = "the-operator-key-" + uuid.uuid4().hex
    core.create_namespaced_secret(
        system,
        k8s.V1Secret(metadata=k8s.V1ObjectMeta(name="operator-key"), string_data={"key": secret}),
    )
    pipeline = pipeline_of(
        store,
        str(ROGUE / "rogue-lookup"),
        {"target": {"namespace": system, "name": "operator-key"}},
    )
    reason = await refused(deployer, pipeline)
    assert "forbidden" in reason and "cannot get resource" in reason, reason
    encoded = base64.b64encode(secret.encode()).decode()
    assert secret not in reason and encoded not in reason
    # Nothing of it landed in the tenant's namespace either.
    maps = wire(core.list_namespaced_config_map(namespace_of(pipeline, store)))["items"]
    assert all(encoded not in str(m.get("data")) for m in maps)


@pytest.mark.parametrize(
    ("chart", "expected"),
    [
        ("rogue-clusterrole", "ClusterRole '{release}-everything' is cluster-scoped"),
        ("rogue-namespace", "ConfigMap '{release}-elsewhere' is in namespace 'kube-system'"),
    ],
)
async def test_the_post_renderer_refuses_what_leaves_the_namespace(
    store: ControlStore, deployer: HelmDeployer, kube: k8s.ApiClient, chart: str, expected: str
) -> None:
    pipeline = pipeline_of(store, f"tests/data/charts/{chart}")
    names = names_from_store(store.pipeline_names)(pipeline.id)
    assert names is not None
    reason = await refused(deployer, pipeline)
    assert "the chart renders what a pipeline may not create" in reason, reason
    assert expected.format(release=names.release) in reason, reason
    roles = wire(k8s.RbacAuthorizationV1Api(kube).list_cluster_role())["items"]
    assert f"{names.release}-everything" not in [r["metadata"]["name"] for r in roles]
    elsewhere = wire(k8s.CoreV1Api(kube).list_namespaced_config_map("kube-system"))["items"]
    assert not [m for m in elsewhere if m["metadata"]["name"].startswith(names.release)]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"privileged": True}, "must not set securityContext.privileged=true"),
        ({"hostPath": "/etc"}, 'uses restricted volume type "hostPath"'),
    ],
)
async def test_pod_security_refuses_a_privileged_or_host_path_pod_before_install(
    store: ControlStore,
    deployer: HelmDeployer,
    kube: k8s.ApiClient,
    values: dict[str, Any],
    expected: str,
) -> None:
    pipeline = pipeline_of(store, "tests/data/charts/rogue-pod", values)
    reason = await refused(deployer, pipeline)
    assert (
        "does not admit the chart's pods" in reason and 'violates PodSecurity "restricted' in reason
    )
    assert expected in reason, reason
    # Refused before the install: no Deployment was made.
    namespace = namespace_of(pipeline, store)
    assert not wire(k8s.AppsV1Api(kube).list_namespaced_deployment(namespace))["items"]


async def test_a_chart_with_hooks_is_refused_and_its_hooks_never_run(
    store: ControlStore, deployer: HelmDeployer, kube: k8s.ApiClient
) -> None:
    pipeline = pipeline_of(store, "tests/data/charts/rogue-hook")
    names = names_from_store(store.pipeline_names)(pipeline.id)
    assert names is not None
    reason = await refused(deployer, pipeline)
    assert f"the chart has hooks ({names.release}-hook)" in reason, reason
    pods = wire(k8s.CoreV1Api(kube).list_namespaced_pod(names.namespace))["items"]
    assert pods == []


async def test_a_compliant_pod_installs_and_the_namespace_is_prepared(
    store: ControlStore, deployer: HelmDeployer, kube: k8s.ApiClient
) -> None:
    pipeline = pipeline_of(store, "tests/data/charts/rogue-pod")
    status = await deployer.deploy(pipeline)
    assert status.status == "deployed"
    namespace = status.namespace
    core = k8s.CoreV1Api(kube)
    labels = wire(core.read_namespace(namespace))["metadata"]["labels"]
    assert labels[PSA_ENFORCE] == "restricted"
    quota = wire(core.read_namespaced_resource_quota(OWNED, namespace))
    assert quota["spec"]["hard"] == {"pods": "10", "requests.cpu": "2", "limits.memory": "4Gi"}
    [limit] = wire(core.read_namespaced_limit_range(OWNED, namespace))["spec"]["limits"]
    assert (limit["default"], limit["defaultRequest"]) == (
        {"cpu": "500m", "memory": "256Mi"},
        {"cpu": "50m", "memory": "64Mi"},
    )
    account = wire(core.read_namespaced_service_account(OWNED, namespace))
    assert account["automountServiceAccountToken"] is False
    networking = k8s.NetworkingV1Api(kube)
    policy = wire(networking.read_namespaced_network_policy(OWNED, namespace))["spec"]
    assert policy["podSelector"] == {} and policy["policyTypes"] == ["Ingress", "Egress"]
    assert not policy.get("ingress")
    scheduler, dns = policy["egress"]
    assert scheduler["ports"] == [{"protocol": "TCP", "port": 50051}]
    assert scheduler["to"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "wsched-system"
    }
    assert {(p["protocol"], p["port"]) for p in dns["ports"]} == {("UDP", 53), ("TCP", 53)}
    # Deploying again changes nothing and still works.
    assert (await deployer.deploy(pipeline)).revision == 2


def can(kube: k8s.ApiClient, user: str, **attributes: str) -> bool:
    """The API server's answer for ``user`` (and the groups every ServiceAccount has)."""
    review: Any = {
        "spec": {
            "user": user,
            "groups": ["system:serviceaccounts", "system:authenticated"],
            "resourceAttributes": attributes,
        }
    }
    answer = k8s.AuthorizationV1Api(kube).create_subject_access_review(review)
    return bool(wire(answer)["status"]["allowed"])


async def test_the_tenants_account_can_do_nothing_outside_its_namespace(
    store: ControlStore, deployer: HelmDeployer, kube: k8s.ApiClient
) -> None:
    pipeline = pipeline_of(store, "charts/examples/echo")
    namespace = (await deployer.deploy(pipeline)).namespace
    user = POLICY.user(namespace)
    assert can(kube, user, namespace=namespace, verb="create", resource="deployments", group="apps")
    assert can(kube, user, namespace=namespace, verb="get", resource="secrets")
    for other in ("default", "kube-system", "wsched-system", "wsched-someone-else"):
        assert not can(kube, user, namespace=other, verb="get", resource="secrets")
        assert not can(kube, user, namespace=other, verb="list", resource="configmaps")
        assert not can(
            kube, user, namespace=other, verb="create", resource="deployments", group="apps"
        )
    assert not can(kube, user, verb="list", resource="secrets")  # all namespaces
    assert not can(kube, user, verb="create", resource="namespaces")
    assert not can(
        kube, user, verb="create", resource="clusterroles", group="rbac.authorization.k8s.io"
    )
    assert not can(
        kube,
        user,
        namespace=namespace,
        verb="create",
        resource="rolebindings",
        group="rbac.authorization.k8s.io",
    )
    assert not can(kube, user, namespace=namespace, verb="patch", resource="namespaces")


@pytest.mark.parametrize(
    ("chart", "setting"),
    [
        ("../../tmp", "WSCHED_CHART_ROOTS"),
        ("/etc", "WSCHED_CHART_ROOTS"),
        ("charts/examples/../workload-scheduler", "WSCHED_CHART_ROOTS"),
        ("https://charts.example.com/stable/echo", "WSCHED_CHART_REPOSITORIES"),
        ("oci://registry.example.com/pipelines-evil/echo", "WSCHED_CHART_REPOSITORIES"),
    ],
)
async def test_a_chart_outside_the_allow_list_is_refused_without_a_path(
    store: ControlStore, deployer: HelmDeployer, chart: str, setting: str
) -> None:
    reason = await refused(deployer, pipeline_of(store, chart))
    assert setting in reason, reason


async def test_a_release_installed_before_containment_is_read_and_removed_as_the_tenant(
    store: ControlStore,
    deployer: HelmDeployer,
    kube: k8s.ApiClient,
    kube_cluster: KubeCluster,
    helm_bin: Path,
) -> None:
    """Installed by an older API with its own rights, in a namespace never prepared."""
    pipeline = pipeline_of(store, "tests/data/charts/rogue-pod")
    names = names_from_store(store.pipeline_names)(pipeline.id)
    assert names is not None
    k8s.CoreV1Api(kube).create_namespace(
        k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=names.namespace))
    )
    admin = pyhelm3.Client(executable=str(helm_bin), kubeconfig=kube_cluster.kubeconfig_path)
    chart = await admin.get_chart(ROGUE / "rogue-pod")
    await admin.install_or_upgrade_release(
        names.release, chart, {}, namespace=names.namespace, create_namespace=False
    )
    assert not await deployer.in_place(pipeline)  # not from what we would deploy: stale
    await deployer.remove(pipeline)
    apps = k8s.AppsV1Api(kube)
    assert not wire(apps.list_namespaced_deployment(names.namespace))["items"]


@pytest.mark.parametrize("example", ["echo", "ocr"])
async def test_the_bundled_examples_pass_the_restricted_level(
    store: ControlStore, deployer: HelmDeployer, example: str
) -> None:
    values = {"nativeSidecars": True} if example == "ocr" else {}
    pipeline = pipeline_of(store, f"charts/examples/{example}", values)
    assert (await deployer.deploy(pipeline)).status == "deployed"

"""The scheduler's own chart (charts/workload-scheduler) with the real helm and a real
kube-apiserver, and the contract between the scheduler and the pipeline charts: the
autoscaling gauge KEDA queries, and the replicas left to the built-in scaler.

Every chart's lint and plain render is checked in test_pipeline_charts.py.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pyhelm3
import pytest
from kubernetes import client as k8s

from services.deploy.tenancy import TENANT_RULES
from services.infra.kube import KubeCluster
from tests.contract import check_command, check_settings
from tests.integration.charts.rendering import (
    CHARTS,
    built,
    load_yaml,
    merged,
    render,
    render_all,
)

pytestmark = pytest.mark.integration

CHART = CHARTS / "workload-scheduler"
#: The values CI renders the chart with: the required ones, with placeholders.
REQUIRED: dict[str, Any] = load_yaml(CHART / "ci" / "required-values.yaml")
RELEASE = "wsched"
NAMESPACE = "wsched-system"
#: What the pods listen on: compared with, never bound to.
EVERY_INTERFACE = "0.0.0.0"  # noqa: S104
Objects = dict[tuple[str, str], dict[str, Any]]


async def render_chart(
    helm_bin: Path,
    values: dict[str, Any] | None = None,
    *,
    base: dict[str, Any] = REQUIRED,
    namespace: str = NAMESPACE,
) -> Objects:
    """The chart's objects (hooks included) by (kind, name)."""
    docs = await render_all(
        helm_bin, CHART, merged(base, values or {}), release=RELEASE, namespace=namespace
    )
    return {(doc["kind"], doc["metadata"]["name"]): doc for doc in docs}


async def render_error(helm_bin: Path, values: dict[str, Any], **kwargs: Any) -> str:
    with pytest.raises(pyhelm3.errors.Error) as info:
        await render_chart(helm_bin, values, **kwargs)
    return str(info.value)


def of_kind(objects: Objects, kind: str) -> dict[str, dict[str, Any]]:
    return {name: doc for (k, name), doc in objects.items() if k == kind}


def pod_of(workload: dict[str, Any]) -> dict[str, Any]:
    pod: dict[str, Any] = workload["spec"]["template"]["spec"]
    return pod


def container(workload: dict[str, Any]) -> dict[str, Any]:
    (only,) = pod_of(workload)["containers"]
    return dict(only)


def env_of(workload: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(workload)["env"]}


def env_names(workload: dict[str, Any]) -> list[str]:
    return [e["name"] for e in container(workload)["env"]]


def secret_ref(name: str, key: str) -> dict[str, Any]:
    return {"secretKeyRef": {"name": name, "key": key}}


# --- the scheduler and the API -----------------------------------------------------------


async def test_the_scheduler_replicas_each_have_a_stable_name_and_a_reachable_address(
    helm_bin: Path,
) -> None:
    scheduler = (await render_chart(helm_bin))["Deployment", "wsched-scheduler"]
    assert scheduler["spec"]["replicas"] == 2
    assert container(scheduler)["args"] == ["scheduler"]
    env = env_of(scheduler)
    assert env["WSCHED_REPLICA_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["POD_IP"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert env["WSCHED_GRPC_ADVERTISE"] == "$(POD_IP):50051"
    # Kubernetes expands $(POD_IP) only from variables declared before it.
    names = env_names(scheduler)
    assert names.index("POD_IP") < names.index("WSCHED_GRPC_ADVERTISE")
    assert env["WSCHED_GRPC_HOST"] == env["WSCHED_METRICS_HOST"] == EVERY_INTERFACE
    assert (env["WSCHED_GRPC_PORT"], env["WSCHED_METRICS_PORT"]) == ("50051", "9464")
    assert env["WSCHED_KAFKA_BOOTSTRAP"] == REQUIRED["kafka"]["bootstrap"]
    assert env["WSCHED_DATABASE_URL"] == secret_ref("wsched", "database-url")
    assert env["WSCHED_AUTOSCALER"] == "builtin"
    # Least privilege: the scheduler never sees the API's keys.
    assert "WSCHED_OPERATOR_KEY" not in env and "WSCHED_SECRET_KEY" not in env
    ports = {p["name"]: p["containerPort"] for p in container(scheduler)["ports"]}
    assert ports == {"grpc": 50051, "metrics": 9464}
    probes = container(scheduler)
    assert probes["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert probes["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}


async def test_the_api_deploys_pipelines_with_helm_pointing_workers_at_the_scheduler(
    helm_bin: Path,
) -> None:
    objects = await render_chart(helm_bin)
    api = objects["Deployment", "wsched-api"]
    assert api["spec"]["replicas"] == 2
    assert container(api)["args"] == ["api"]
    env = env_of(api)
    assert (env["WSCHED_HTTP_HOST"], env["WSCHED_HTTP_PORT"]) == (EVERY_INTERFACE, "8080")
    assert env["WSCHED_DEPLOYER"] == "helm"
    assert env["WSCHED_AUTOSCALER"] == "builtin"
    assert env["WSCHED_WORKERS_SCHEDULER"] == f"wsched-scheduler.{NAMESPACE}.svc:50051"
    grpc = objects["Service", "wsched-scheduler"]["spec"]["ports"]
    assert [p["port"] for p in grpc] == [50051]  # the address above is that Service's
    assert env["WSCHED_OPERATOR_KEY"] == secret_ref("wsched", "operator-key")
    assert env["WSCHED_SECRET_KEY"] == secret_ref("wsched", "secret-key")
    assert "WSCHED_WORKER_IMAGE" not in env  # each pipeline chart keeps its own
    assert "WSCHED_KUBECONFIG" not in env  # in-cluster credentials
    probes = container(api)
    assert probes["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert probes["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert pod_of(api)["automountServiceAccountToken"] is True  # the Helm deployer's


async def test_settings_from_values_reach_the_processes(helm_bin: Path) -> None:
    values = {
        "deployer": {"workerImage": "registry.example/wsched:0.1.0", "type": "noop"},
        "autoscaler": "none",
        "logLevel": "DEBUG",
        "extraEnv": [{"name": "WSCHED_WINDOW_TASKS", "value": "500"}],
        "scheduler": {
            "replicas": 3,
            "extraEnv": [{"name": "WSCHED_SCALER_INTERVAL_S", "value": "2"}],
        },
    }
    objects = await render_chart(helm_bin, values)
    api, scheduler = objects["Deployment", "wsched-api"], objects["Deployment", "wsched-scheduler"]
    api_env, scheduler_env = env_of(api), env_of(scheduler)
    assert api_env["WSCHED_WORKER_IMAGE"] == "registry.example/wsched:0.1.0"
    assert api_env["WSCHED_DEPLOYER"] == "noop"
    assert api_env["WSCHED_AUTOSCALER"] == scheduler_env["WSCHED_AUTOSCALER"] == "none"
    assert api_env["WSCHED_LOG_LEVEL"] == scheduler_env["WSCHED_LOG_LEVEL"] == "DEBUG"
    assert api_env["WSCHED_WINDOW_TASKS"] == scheduler_env["WSCHED_WINDOW_TASKS"] == "500"
    assert scheduler_env["WSCHED_SCALER_INTERVAL_S"] == "2"
    assert "WSCHED_SCALER_INTERVAL_S" not in api_env
    assert scheduler["spec"]["replicas"] == 3
    # Neither process talks to the Kubernetes API any more: no token, no rights.
    assert pod_of(api)["automountServiceAccountToken"] is False
    assert pod_of(scheduler)["automountServiceAccountToken"] is False
    assert not of_kind(objects, "ClusterRole") and not of_kind(objects, "ClusterRoleBinding")


async def test_the_services_reach_their_pods(helm_bin: Path) -> None:
    objects = await render_chart(helm_bin)
    services = of_kind(objects, "Service")
    assert set(services) == {"wsched-api", "wsched-scheduler", "wsched-scheduler-headless"}
    api_labels = objects["Deployment", "wsched-api"]["spec"]["template"]["metadata"]["labels"]
    scheduler_pod = objects["Deployment", "wsched-scheduler"]["spec"]["template"]["metadata"]
    for name, labels in [
        ("wsched-api", api_labels),
        ("wsched-scheduler", scheduler_pod["labels"]),
        ("wsched-scheduler-headless", scheduler_pod["labels"]),
    ]:
        assert services[name]["spec"]["selector"].items() <= labels.items(), name
    api = services["wsched-api"]["spec"]
    assert (api["type"], api["ports"][0]["port"]) == ("ClusterIP", 8080)
    assert services["wsched-scheduler"]["spec"]["type"] == "ClusterIP"
    headless = services["wsched-scheduler-headless"]["spec"]
    assert headless["clusterIP"] == "None"
    assert headless["publishNotReadyAddresses"] is False
    assert {p["name"]: p["port"] for p in headless["ports"]} == {"grpc": 50051, "metrics": 9464}


async def test_every_pod_runs_unprivileged_on_a_read_only_root(helm_bin: Path) -> None:
    objects = await render_chart(helm_bin)
    workloads = {**of_kind(objects, "Deployment"), **of_kind(objects, "Job")}
    assert set(workloads) == {"wsched-api", "wsched-scheduler", "wsched-migrations"}
    for name, workload in workloads.items():
        pod = pod_of(workload)
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] == 10001, name
        context = container(workload)["securityContext"]
        assert context["allowPrivilegeEscalation"] is False, name
        assert context["capabilities"]["drop"] == ["ALL"], name
        assert context["readOnlyRootFilesystem"] is True, name
        # ... where /tmp is the only place to write, and the data dir lives in it.
        assert {"name": "tmp", "mountPath": "/tmp"} in container(workload)["volumeMounts"]
        assert any(v["name"] == "tmp" and "emptyDir" in v for v in pod["volumes"]), name
        assert env_of(workload)["WSCHED_DATA_DIR"] == "/tmp/wsched", name


# --- RBAC --------------------------------------------------------------------------------


def rules_of(objects: Objects, component: str) -> list[dict[str, Any]]:
    role = objects["ClusterRole", f"{NAMESPACE}-wsched-{component}"]
    rules: list[dict[str, Any]] = role["rules"]
    return rules


def allowed(rules: list[dict[str, Any]], group: str, resource: str) -> set[str]:
    verbs: set[str] = set()
    for rule in rules:
        if group in rule["apiGroups"] and resource in rule["resources"]:
            verbs.update(rule["verbs"])
    return verbs


async def test_rbac_grants_each_component_only_what_it_needs(helm_bin: Path) -> None:
    objects = await render_chart(helm_bin)
    api, scheduler = rules_of(objects, "api"), rules_of(objects, "scheduler")
    for rule in api + scheduler:
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field], rule
    # Delete: a deleted tenant's namespace goes too (the API deletes only namespaces that
    # carry our managed-by label; RBAC cannot narrow this to them).
    assert allowed(api, "", "namespaces") == {"get", "list", "create", "patch", "delete"}
    # The API prepares tenant namespaces; it has no rights over what a release contains.
    for group, resource in [
        ("", "secrets"),
        ("", "configmaps"),
        ("", "pods"),
        ("apps", "deployments"),
        ("keda.sh", "scaledobjects"),
    ]:
        assert allowed(api, group, resource) == set(), resource
    tenant_role = f"{NAMESPACE}-wsched-tenant"
    binds = [r for r in api if "bind" in r["verbs"]]
    assert binds == [
        {
            "apiGroups": ["rbac.authorization.k8s.io"],
            "resources": ["clusterroles"],
            "verbs": ["bind"],
            "resourceNames": [tenant_role],
        }
    ]
    impersonates = [r for r in api if "impersonate" in r["verbs"]]
    assert impersonates == [
        {
            "apiGroups": [""],
            "resources": ["serviceaccounts"],
            "verbs": ["impersonate"],
            "resourceNames": ["wsched-tenant"],
        }
    ]
    # The tenant ClusterRole is the one the deployer's tenancy module describes.
    assert objects["ClusterRole", tenant_role]["rules"] == [dict(r) for r in TENANT_RULES]
    api_env = env_of(objects["Deployment", "wsched-api"])
    assert api_env["WSCHED_TENANT_CLUSTER_ROLE"] == tenant_role
    assert api_env["WSCHED_SCHEDULER_NAMESPACE"] == NAMESPACE
    assert allowed(scheduler, "apps", "deployments") == {"get", "list"}
    assert allowed(scheduler, "apps", "deployments/scale") == {"get", "patch", "update"}
    assert allowed(scheduler, "", "secrets") == set()
    assert len(scheduler) == 2
    for component in ("api", "scheduler"):
        binding = objects["ClusterRoleBinding", f"{NAMESPACE}-wsched-{component}"]
        assert binding["roleRef"]["name"] == f"{NAMESPACE}-wsched-{component}"
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": f"wsched-{component}", "namespace": NAMESPACE}
        ]
        workload = objects["Deployment", f"wsched-{component}"]
        assert pod_of(workload)["serviceAccountName"] == f"wsched-{component}"
        assert ("ServiceAccount", f"wsched-{component}") in objects


async def test_rbac_and_service_accounts_can_be_left_to_the_operator(helm_bin: Path) -> None:
    objects = await render_chart(helm_bin, {"rbac": {"create": False}})
    assert not of_kind(objects, "ClusterRole") and not of_kind(objects, "ClusterRoleBinding")
    assert len(of_kind(objects, "ServiceAccount")) == 2

    error = await render_error(helm_bin, {"serviceAccount": {"create": False}})
    assert "serviceAccount.api.name is required" in error

    named = {"create": False, "api": {"name": "ops-api"}, "scheduler": {"name": "ops-sched"}}
    objects = await render_chart(helm_bin, {"serviceAccount": named})
    assert not of_kind(objects, "ServiceAccount")
    binding = objects["ClusterRoleBinding", f"{NAMESPACE}-wsched-api"]
    assert binding["subjects"][0]["name"] == "ops-api"
    assert pod_of(objects["Deployment", "wsched-scheduler"])["serviceAccountName"] == "ops-sched"


# --- disruption budgets, monitoring, migrations ------------------------------------------


async def test_disruption_budgets_keep_one_pod_of_each_component(helm_bin: Path) -> None:
    objects = await render_chart(helm_bin)
    budgets = of_kind(objects, "PodDisruptionBudget")
    assert set(budgets) == {"wsched-api", "wsched-scheduler"}
    for name, budget in budgets.items():
        assert budget["apiVersion"] == "policy/v1"
        assert budget["spec"]["minAvailable"] == 1
        pod_labels = objects["Deployment", name]["spec"]["template"]["metadata"]["labels"]
        assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()

    # One replica: a budget would block every node drain, so there is none.
    single = await render_chart(helm_bin, {"api": {"replicas": 1}})
    assert set(of_kind(single, "PodDisruptionBudget")) == {"wsched-scheduler"}
    off = {"podDisruptionBudget": {"enabled": False, "minAvailable": 1}}
    disabled = await render_chart(helm_bin, {"api": off, "scheduler": off})
    assert not of_kind(disabled, "PodDisruptionBudget")


async def test_the_service_monitor_is_optional_and_keeps_the_gauges_labels(
    helm_bin: Path,
) -> None:
    assert not of_kind(await render_chart(helm_bin), "ServiceMonitor")

    values = {"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}}}
    objects = await render_chart(helm_bin, values)
    monitor = objects["ServiceMonitor", "wsched-scheduler"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prom"
    selector = monitor["spec"]["selector"]["matchLabels"]
    selected = [
        name
        for name, service in of_kind(objects, "Service").items()
        if selector.items() <= service["metadata"]["labels"].items()
    ]
    assert selected == ["wsched-scheduler-headless"]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["path"]) == ("metrics", "/metrics")
    # server_scheduler_queue_length's own namespace label (the tenant's) must survive.
    assert endpoint["honorLabels"] is True


def hook(doc: dict[str, Any]) -> dict[str, str]:
    annotations: dict[str, str] = doc["metadata"].get("annotations", {})
    return {k: v for k, v in annotations.items() if k.startswith("helm.sh/hook")}


async def test_migrations_run_as_a_hook_before_install_and_upgrade(helm_bin: Path) -> None:
    objects = await render_chart(helm_bin)
    job = objects["Job", "wsched-migrations"]
    assert hook(job)["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert hook(job)["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
    assert container(job)["args"] == ["db", "upgrade"]
    # The chart's Secret does not exist before install: the Job reads a hook Secret of
    # its own, created before it (a lower weight).
    env = env_of(job)
    assert env["WSCHED_DATABASE_URL"] == secret_ref("wsched-migrations", "database-url")
    secret = objects["Secret", "wsched-migrations"]
    assert hook(secret)["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert int(hook(secret)["helm.sh/hook-weight"]) < int(hook(job)["helm.sh/hook-weight"])
    assert secret["data"]["database-url"] == objects["Secret", "wsched"]["data"]["database-url"]
    assert "serviceAccountName" not in pod_of(job)  # the release's does not exist yet
    assert pod_of(job)["automountServiceAccountToken"] is False

    existing = {"database": {"url": "", "existingSecret": "tidb-credentials"}}
    objects = await render_chart(helm_bin, existing)
    assert ("Secret", "wsched-migrations") not in objects
    env = env_of(objects["Job", "wsched-migrations"])
    assert env["WSCHED_DATABASE_URL"] == secret_ref("tidb-credentials", "url")

    disabled = await render_chart(helm_bin, {"migrations": {"enabled": False}})
    assert not of_kind(disabled, "Job")


# --- configuration errors ----------------------------------------------------------------


async def test_existing_secrets_replace_the_charts_own(helm_bin: Path) -> None:
    values = {
        "database": {"existingSecret": "db", "existingSecretKey": "dsn"},
        "auth": {"existingSecret": "keys", "operatorKeyKey": "op", "secretKeyKey": "fernet"},
    }
    base = {"kafka": REQUIRED["kafka"]}
    objects = await render_chart(helm_bin, values, base=base)
    assert ("Secret", "wsched") not in objects
    env = env_of(objects["Deployment", "wsched-api"])
    assert env["WSCHED_DATABASE_URL"] == secret_ref("db", "dsn")
    assert env["WSCHED_OPERATOR_KEY"] == secret_ref("keys", "op")
    assert env["WSCHED_SECRET_KEY"] == secret_ref("keys", "fernet")


@pytest.mark.parametrize(
    ("missing", "message"),
    [
        ("kafka", "kafka.bootstrap is required"),
        ("database", "a database is required: set database.url"),
        ("auth", "auth.operatorKey is required"),
    ],
    ids=["kafka", "database", "keys"],
)
async def test_missing_required_values_fail_with_what_to_set(
    helm_bin: Path, missing: str, message: str
) -> None:
    base = {key: value for key, value in REQUIRED.items() if key != missing}
    assert message in await render_error(helm_bin, {}, base=base)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"autoscaler": "sometimes"}, "at '/autoscaler': value must be one of"),
        ({"scheduler": {"replicas": 0}}, "at '/scheduler/replicas': minimum: got 0, want 1"),
        ({"deployer": {"type": "local"}}, "at '/deployer/type': value must be one of"),
        ({"replicas": 3}, "additional properties 'replicas' not allowed"),
        ({"auth": {"secretKey": "not-a-fernet-key"}}, "at '/auth/secretKey'"),
    ],
    ids=["autoscaler", "scheduler-replicas", "deployer", "unknown-key", "secret-key"],
)
async def test_the_schema_rejects_bad_values(
    helm_bin: Path, values: dict[str, Any], message: str
) -> None:
    error = await render_error(helm_bin, values)
    assert "values don't meet the specifications of the schema" in error
    assert message in error


# --- installed on a real kube-apiserver --------------------------------------------------


def without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


def wire(obj: Any) -> dict[str, Any]:
    """The object as the API serves it (camelCase keys), without the models' unset fields."""
    out: dict[str, Any] = without_nulls(obj.to_dict(serialize=True))
    return out


async def test_the_chart_installs_on_a_real_api_server(
    helm_bin: Path, kube_cluster: KubeCluster, kube_namespace: str
) -> None:
    rendered = await render_chart(helm_bin, namespace=kube_namespace)
    client = pyhelm3.Client(executable=str(helm_bin), kubeconfig=kube_cluster.kubeconfig_path)
    chart = await client.get_chart(CHART)
    # No hooks: with no controller-manager the migrations Job never completes, and helm
    # would wait for it before installing anything. The hook objects are checked by a
    # server-side dry run below instead. Never --wait: no pod ever runs.
    revision = await client.install_or_upgrade_release(
        RELEASE, chart, REQUIRED, namespace=kube_namespace, create_namespace=False, no_hooks=True
    )
    try:
        assert revision.status == pyhelm3.ReleaseRevisionStatus.DEPLOYED
        with kube_cluster.api_client() as api:
            check_installed(api, kube_namespace, rendered)
            dry_run_hooks(api, kube_namespace, rendered)
            await check_authorized(api, kube_namespace)
    finally:
        # The ClusterRoles outlive the namespace: uninstalling removes them.
        await client.uninstall_release(RELEASE, namespace=kube_namespace)


def check_installed(api: k8s.ApiClient, namespace: str, rendered: Objects) -> None:
    core, apps = k8s.CoreV1Api(api), k8s.AppsV1Api(api)
    rbac, policy = k8s.RbacAuthorizationV1Api(api), k8s.PolicyV1Api(api)
    for name in ("wsched-api", "wsched-scheduler"):
        stored = wire(apps.read_namespaced_deployment(name, namespace))
        assert stored["spec"]["replicas"] == 2, name
        # The server adds defaults (fieldRef apiVersion ...): compare names, then values.
        assert env_names(stored) == env_names(rendered["Deployment", name]), name
        assert wire(core.read_namespaced_service_account(name, namespace))["metadata"]["name"]
        assert (
            wire(policy.read_namespaced_pod_disruption_budget(name, namespace))["spec"][
                "minAvailable"
            ]
            == 1
        )
    env = env_of(wire(apps.read_namespaced_deployment("wsched-scheduler", namespace)))
    assert env["WSCHED_REPLICA_NAME"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["WSCHED_GRPC_ADVERTISE"] == "$(POD_IP):50051"
    headless = wire(core.read_namespaced_service("wsched-scheduler-headless", namespace))
    assert headless["spec"]["clusterIP"] == "None"
    grpc = wire(core.read_namespaced_service("wsched-scheduler", namespace))
    assert grpc["spec"]["clusterIP"] not in ("", "None")  # a virtual IP was allocated
    assert (
        wire(core.read_namespaced_service("wsched-api", namespace))["spec"]["ports"][0]["port"]
        == 8080
    )
    for component in ("api", "scheduler"):
        name = f"{namespace}-wsched-{component}"
        role = wire(rbac.read_cluster_role(name))
        assert role["rules"] == rendered["ClusterRole", name]["rules"]
        binding = wire(rbac.read_cluster_role_binding(name))
        assert binding["subjects"][0]["namespace"] == namespace
    assert "database-url" in wire(core.read_namespaced_secret("wsched", namespace))["data"]


def dry_run_hooks(api: k8s.ApiClient, namespace: str, rendered: Objects) -> None:
    # Strict: unknown or duplicate fields are errors; dry run: nothing is stored.
    job = k8s.V1Job.model_validate(rendered["Job", "wsched-migrations"])
    secret = k8s.V1Secret.model_validate(rendered["Secret", "wsched-migrations"])
    k8s.CoreV1Api(api).create_namespaced_secret(
        namespace, secret, dry_run="All", field_validation="Strict"
    )
    created = k8s.BatchV1Api(api).create_namespaced_job(
        namespace, job, dry_run="All", field_validation="Strict"
    )
    assert wire(created)["spec"]["template"]["spec"]["containers"][0]["args"] == ["db", "upgrade"]


def can(
    api: k8s.ApiClient,
    account: str,
    verb: str,
    resource: str,
    *,
    namespace: str | None = None,
    subresource: str | None = None,
) -> bool:
    """What the API server's RBAC authorizer answers for the service account ``account``
    (``namespace/name``) doing ``verb`` on ``resource`` (``[group/]resource``)."""
    sa_namespace, name = account.split("/")
    group, _, kind = resource.rpartition("/")
    review = k8s.V1SubjectAccessReview(
        spec=k8s.V1SubjectAccessReviewSpec(
            user=f"system:serviceaccount:{sa_namespace}:{name}",
            groups=["system:serviceaccounts", f"system:serviceaccounts:{sa_namespace}"],
            resource_attributes=k8s.V1ResourceAttributes(
                verb=verb,
                group=group,
                resource=kind,
                namespace=namespace,
                subresource=subresource,
            ),
        )
    )
    answer = wire(k8s.AuthorizationV1Api(api).create_subject_access_review(review))
    return bool(answer["status"]["allowed"])


async def check_authorized(api: k8s.ApiClient, namespace: str) -> None:
    """The bound rights as the API server enforces them, in a tenant's namespace that did
    not exist when the chart was installed."""
    api_sa, scheduler_sa = f"{namespace}/wsched-api", f"{namespace}/wsched-scheduler"
    tenant = "wsched-acme"
    # RBAC's caches follow new bindings within moments: wait for the first answer.
    for _ in range(50):
        if can(
            api, scheduler_sa, "patch", "apps/deployments", subresource="scale", namespace=tenant
        ):
            break
        await asyncio.sleep(0.1)
    else:
        pytest.fail("the scheduler's ClusterRoleBinding never took effect")
    assert can(api, scheduler_sa, "list", "apps/deployments", namespace=tenant)
    assert not can(api, scheduler_sa, "delete", "apps/deployments", namespace=tenant)
    assert not can(api, scheduler_sa, "get", "secrets", namespace=tenant)
    assert not can(api, scheduler_sa, "create", "namespaces")
    assert can(api, api_sa, "create", "namespaces")
    assert can(api, api_sa, "delete", "namespaces")  # a deleted tenant's (label checked first)
    for resource in ("serviceaccounts", "resourcequotas", "limitranges"):
        assert can(api, api_sa, "create", resource, namespace=tenant), resource
    assert can(api, api_sa, "create", "networking.k8s.io/networkpolicies", namespace=tenant)
    assert can(api, api_sa, "create", "rbac.authorization.k8s.io/rolebindings", namespace=tenant)
    for resource in ("secrets", "configmaps", "apps/deployments", "keda.sh/scaledobjects"):
        assert not can(api, api_sa, "create", resource, namespace=tenant), resource
        assert not can(api, api_sa, "get", resource, namespace=tenant), resource
    assert not can(api, api_sa, "get", "pods", namespace=tenant)
    assert not can(api, api_sa, "patch", "apps/deployments", subresource="scale", namespace=tenant)


# --- the pipeline charts' side of the contract (pipeline-lib, through the echo example) --

#: A pipeline's release as the Helm deployer names it: <tenant>-<application>-<pipeline>
#: in the tenant's namespace.
PIPELINE_RELEASE = "acme-shop-echo"
PIPELINE_NAMESPACE = "wsched-acme"


async def render_echo(helm_bin: Path, charts: Path, values: dict[str, Any]) -> dict[str, Any]:
    chart = await built(helm_bin, charts, "echo")
    defaults = {"pipelineId": "0193-echo", "workerToken": {"value": "wst_x"}}
    return await render(
        helm_bin,
        chart,
        merged(defaults, values),
        release=PIPELINE_RELEASE,
        namespace=PIPELINE_NAMESPACE,
    )


async def test_keda_queries_the_gauge_the_scheduler_exports_for_the_release(
    helm_bin: Path, charts: Path
) -> None:
    rendered = await render_echo(helm_bin, charts, {"scaling": {"keda": {"enabled": True}}})
    (trigger,) = rendered["ScaledObject"]["spec"]["triggers"]
    assert trigger["metadata"]["query"] == (
        f'sum(server_scheduler_queue_length{{worker="{PIPELINE_RELEASE}",'
        f'namespace="{PIPELINE_NAMESPACE}"}})'
    )


@pytest.mark.parametrize(
    ("scaling", "replicas"),
    [
        ({"min_replicas": 3}, 3),
        ({"min_replicas": 3, "autoscaler": "none"}, 3),
        ({"min_replicas": 3, "autoscaler": "builtin"}, None),
        ({"min_replicas": 0, "keda": {"enabled": True}}, None),
    ],
    ids=["fixed", "autoscaler-none", "builtin-scaler", "keda"],
)
async def test_replicas_are_left_to_whoever_scales_the_deployment(
    helm_bin: Path, charts: Path, scaling: dict[str, Any], replicas: int | None
) -> None:
    deployment = (await render_echo(helm_bin, charts, {"scaling": scaling}))["Deployment"]
    assert deployment["spec"].get("replicas") == replicas
    # The built-in scaler finds the pipeline's Deployment by this label.
    assert deployment["metadata"]["labels"]["wsched.io/pipeline-id"] == "0193-echo"


async def test_every_process_is_a_real_wsched_command_with_settings_it_accepts(
    helm_bin: Path,
) -> None:
    """The chart and the code agree: each container runs ``wsched <command>`` with
    options it has, and every WSCHED_* variable is a setting whose value is accepted."""
    objects = await render_chart(
        helm_bin,
        {
            "deployer": {"workerImage": "registry.example:5000/wsched:1.0", "helmTimeoutS": 120},
            "logLevel": "DEBUG",
            "metrics": {"serviceMonitor": {"enabled": True}},
        },
    )
    workloads = {**of_kind(objects, "Deployment"), **of_kind(objects, "Job")}
    assert len(workloads) == 3  # the API, the scheduler, the migrations
    for name, workload in workloads.items():
        process = container(workload)
        assert process.get("command") is None  # the image's entrypoint: wsched
        check_command(process["args"], name)
        literal = {e["name"]: e["value"] for e in process["env"] if "value" in e}
        check_settings(literal, name)

"""A tenant's namespace as the operator's policy wants it, before any chart goes in.

Every tenant's chart is installed by helm acting as the tenant's own ServiceAccount,
bound (a RoleBinding) in the tenant's namespace only, so neither the chart's objects nor
its ``lookup`` calls reach beyond that namespace. The API itself keeps only the rights to
create and label namespaces and to put these objects in them:

- the namespace, labelled with its tenant and the Pod Security Admission level
  (``restricted`` unless the operator says otherwise for that tenant);
- the ServiceAccount helm acts as (no token is ever mounted from it) and its RoleBinding
  to the ClusterRole the scheduler's chart defines (:data:`TENANT_RULES`);
- a ResourceQuota and a LimitRange from the operator's defaults;
- a NetworkPolicy that lets the namespace's pods reach only the scheduler's gRPC port
  and DNS, and nothing reach them.

Blocking functions (the kubernetes client): call them in a thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from services.deploy.kube import MANAGED_BY, MANAGER, TENANT_LABEL

log = logging.getLogger("wsched.deploy.tenancy")

PSA_ENFORCE = "pod-security.kubernetes.io/enforce"
PSA_LEVELS = ("restricted", "baseline", "privileged")
#: The name of the objects this module owns in each tenant namespace.
OWNED = "wsched-tenant"
_RBAC = "rbac.authorization.k8s.io"
_ALL_VERBS = ["get", "list", "watch", "create", "update", "patch", "delete"]

#: What helm may do in a tenant's namespace when it acts as the tenant: the kinds a
#: pipeline chart renders, Secrets (helm keeps its releases in them) and Pods created
#: with ``dryRun`` (the Pod Security check before an install). The scheduler chart's
#: ``rbac.yaml`` renders the same rules into its tenant ClusterRole.
TENANT_RULES: tuple[dict[str, list[str]], ...] = (
    {
        "apiGroups": [""],
        "resources": ["configmaps", "secrets", "services", "serviceaccounts"],
        "verbs": _ALL_VERBS,
    },
    {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": _ALL_VERBS},
    {"apiGroups": ["keda.sh"], "resources": ["scaledobjects"], "verbs": _ALL_VERBS},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["create"]},
)


@dataclass(frozen=True, kw_only=True)
class TenantPolicy:
    """The operator's policy for tenant namespaces (the ``WSCHED_TENANT_*`` settings)."""

    #: The ServiceAccount helm acts as in each tenant namespace.
    service_account: str = OWNED
    #: The ClusterRole (:data:`TENANT_RULES`) bound to it in each tenant namespace.
    cluster_role: str = OWNED
    pod_security: str = "restricted"
    #: Per tenant name, a Pod Security level other than ``pod_security``.
    pod_security_overrides: Mapping[str, str] = field(default_factory=dict)
    #: ResourceQuota ``spec.hard``; empty: no quota.
    quota: Mapping[str, str] = field(default_factory=dict)
    #: LimitRange defaults for each container: limits and requests; empty: none.
    default_limits: Mapping[str, str] = field(default_factory=dict)
    default_requests: Mapping[str, str] = field(default_factory=dict)
    network_policy: bool = True
    #: Where the scheduler's pods run (None: any namespace), their labels and gRPC port.
    scheduler_namespace: str | None = None
    scheduler_pod_labels: Mapping[str, str] = field(default_factory=dict)
    scheduler_port: int = 50051
    dns_namespace: str = "kube-system"
    #: NetworkPolicy egress rules added for every tenant (e.g. a proxy or the internet
    #: for pipelines that fetch their input), as the API takes them.
    extra_egress: tuple[Mapping[str, Any], ...] = ()

    def pod_security_for(self, tenant: str) -> str:
        return self.pod_security_overrides.get(tenant, self.pod_security)

    def user(self, namespace: str) -> str:
        """The user helm impersonates: the tenant's ServiceAccount."""
        return f"system:serviceaccount:{namespace}:{self.service_account}"


def ensure_tenant(api: k8s.ApiClient, namespace: str, *, tenant: str, policy: TenantPolicy) -> None:
    """Create or bring in line the tenant's namespace and the objects the policy puts in
    it. Idempotent: each object is read and written only when it differs."""
    core = k8s.CoreV1Api(api)
    _ensure_namespace(core, namespace, tenant=tenant, policy=policy)
    account: Any = {
        "metadata": {"name": policy.service_account, "labels": _labels(tenant)},
        "automountServiceAccountToken": False,
    }
    _converge(
        lambda: core.read_namespaced_service_account(policy.service_account, namespace),
        lambda: core.create_namespaced_service_account(namespace, account),
        lambda: core.replace_namespaced_service_account(policy.service_account, namespace, account),
        account,
    )
    _ensure_role_binding(k8s.RbacAuthorizationV1Api(api), namespace, tenant, policy)
    if policy.quota:
        _ensure_quota(core, namespace, tenant, policy)
    if policy.default_limits or policy.default_requests:
        _ensure_limits(core, namespace, tenant, policy)
    if policy.network_policy:
        _ensure_network_policy(k8s.NetworkingV1Api(api), namespace, tenant, policy)


def remove_namespace(api: k8s.ApiClient, namespace: str) -> bool:
    """Delete a tenant namespace this module prepared (our label on it); False when there
    is none of ours by that name. Returns before the namespace has terminated."""
    core = k8s.CoreV1Api(api)
    try:
        existing = core.read_namespace(namespace)
    except ApiException as err:
        if err.status == 404:
            return False
        raise
    labels = (existing.metadata.labels if existing.metadata else None) or {}
    if labels.get(MANAGED_BY) != MANAGER:
        log.warning("namespace %s is not one we prepared; left in place", namespace)
        return False
    try:
        core.delete_namespace(namespace)
    except ApiException as err:
        if err.status != 404:
            raise
    return True


def ensure_tenant_role(api: k8s.ApiClient, name: str = OWNED) -> None:
    """Create the tenant ClusterRole as the scheduler's chart does, for clusters without
    that chart (tests, benchmarks): the API itself has no right to."""
    body: Any = {"metadata": {"name": name}, "rules": [dict(rule) for rule in TENANT_RULES]}
    rbac = k8s.RbacAuthorizationV1Api(api)
    _converge(
        lambda: rbac.read_cluster_role(name),
        lambda: rbac.create_cluster_role(body),
        lambda: rbac.replace_cluster_role(name, body),
        body,
    )


def _labels(tenant: str) -> dict[str, str]:
    return {MANAGED_BY: MANAGER, TENANT_LABEL: tenant}


def _ensure_namespace(
    core: k8s.CoreV1Api, namespace: str, *, tenant: str, policy: TenantPolicy
) -> None:
    labels = {**_labels(tenant), PSA_ENFORCE: policy.pod_security_for(tenant)}
    body = k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=namespace, labels=labels))
    try:
        core.create_namespace(body)
    except ApiException as err:
        if err.status != 409:  # HTTP Conflict: it exists
            raise
    else:
        log.info("created namespace %s for tenant %s", namespace, tenant)
        return
    existing = core.read_namespace(namespace)
    current = (existing.metadata.labels if existing.metadata else None) or {}
    if any(current.get(key) != value for key, value in labels.items()):
        core.patch_namespace(namespace, {"metadata": {"labels": labels}})


def _ensure_role_binding(
    rbac: k8s.RbacAuthorizationV1Api, namespace: str, tenant: str, policy: TenantPolicy
) -> None:
    binding: Any = {
        "metadata": {"name": OWNED, "labels": _labels(tenant)},
        "roleRef": {"apiGroup": _RBAC, "kind": "ClusterRole", "name": policy.cluster_role},
        "subjects": [
            {"kind": "ServiceAccount", "name": policy.service_account, "namespace": namespace}
        ],
    }

    def replace() -> object:
        # roleRef is immutable: a changed one means a new binding.
        rbac.delete_namespaced_role_binding(OWNED, namespace)
        return rbac.create_namespaced_role_binding(namespace, binding)

    _converge(
        lambda: rbac.read_namespaced_role_binding(OWNED, namespace),
        lambda: rbac.create_namespaced_role_binding(namespace, binding),
        replace,
        binding,
    )


def _ensure_quota(core: k8s.CoreV1Api, namespace: str, tenant: str, policy: TenantPolicy) -> None:
    body: Any = {
        "metadata": {"name": OWNED, "labels": _labels(tenant)},
        "spec": {"hard": dict(policy.quota)},
    }
    _converge(
        lambda: core.read_namespaced_resource_quota(OWNED, namespace),
        lambda: core.create_namespaced_resource_quota(namespace, body),
        lambda: core.patch_namespaced_resource_quota(OWNED, namespace, body),
        body,
    )


def _ensure_limits(core: k8s.CoreV1Api, namespace: str, tenant: str, policy: TenantPolicy) -> None:
    limit: dict[str, Any] = {"type": "Container"}
    if policy.default_limits:
        limit["default"] = dict(policy.default_limits)
    if policy.default_requests:
        limit["defaultRequest"] = dict(policy.default_requests)
    body: Any = {
        "metadata": {"name": OWNED, "labels": _labels(tenant)},
        "spec": {"limits": [limit]},
    }
    _converge(
        lambda: core.read_namespaced_limit_range(OWNED, namespace),
        lambda: core.create_namespaced_limit_range(namespace, body),
        lambda: core.replace_namespaced_limit_range(OWNED, namespace, body),
        body,
    )


def network_policy(tenant: str, policy: TenantPolicy) -> dict[str, Any]:
    """Deny all ingress; egress to the scheduler's gRPC port and to DNS only."""
    scheduler: dict[str, Any] = {
        "namespaceSelector": (
            {"matchLabels": {"kubernetes.io/metadata.name": policy.scheduler_namespace}}
            if policy.scheduler_namespace
            else {}
        ),
        "podSelector": {"matchLabels": dict(policy.scheduler_pod_labels)},
    }
    dns = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": policy.dns_namespace}}
    }
    return {
        "metadata": {"name": OWNED, "labels": _labels(tenant)},
        "spec": {
            "podSelector": {},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [],
            "egress": [
                {"to": [scheduler], "ports": [{"protocol": "TCP", "port": policy.scheduler_port}]},
                {
                    "to": [dns],
                    "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
                },
                *(dict(rule) for rule in policy.extra_egress),
            ],
        },
    }


def _ensure_network_policy(
    networking: k8s.NetworkingV1Api, namespace: str, tenant: str, policy: TenantPolicy
) -> None:
    body: Any = network_policy(tenant, policy)
    _converge(
        lambda: networking.read_namespaced_network_policy(OWNED, namespace),
        lambda: networking.create_namespaced_network_policy(namespace, body),
        lambda: networking.replace_namespaced_network_policy(OWNED, namespace, body),
        body,
    )


#: Turns the client's models into the API's JSON shape (it sends nothing).
_SERIALIZER = k8s.ApiClient()


def _converge(
    read: Callable[[], Any],
    create: Callable[[], Any],
    replace: Callable[[], Any],
    body: Mapping[str, Any],
) -> None:
    """Create the object, or replace it when what ``body`` sets differs from it."""
    try:
        current = read()
    except ApiException as err:
        if err.status != 404:
            raise
        create()
        return
    if not _matches(body, _SERIALIZER.sanitize_for_serialization(current)):  # type: ignore[no-untyped-call]
        replace()


def _matches(wanted: Any, current: Any) -> bool:
    """Whether every field ``wanted`` sets has that value in ``current`` (the server adds
    defaults and metadata of its own, which do not count)."""
    if isinstance(wanted, Mapping):
        return isinstance(current, Mapping) and all(
            _matches(value, current.get(key)) for key, value in wanted.items()
        )
    if isinstance(wanted, list):
        if not wanted and not current:
            return True  # the server leaves an empty list out
        return (
            isinstance(current, list)
            and len(wanted) == len(current)
            and all(_matches(w, c) for w, c in zip(wanted, current, strict=True))
        )
    return bool(wanted == current) or str(wanted) == str(current)

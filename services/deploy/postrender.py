"""Helm's post-renderer for tenants' charts: refuses what a tenant's chart may not create.

Helm pipes every rendered manifest of an install or upgrade through this program
(``helm --post-renderer``) before it sends anything to the cluster. It passes the
manifests through unchanged when every object is allowed, and otherwise exits 1 with
one ``wsched-post-render:`` line per refusal, naming the object. The reasons are the
tenant's to read (the deployer shows them as the pipeline's reason), so they name kinds,
objects and settings only.

Refused: a kind outside the operator's allow-list (``WSCHED_TENANT_KINDS``, matched with
its API group), a cluster-scoped kind even when listed, an object in another namespace,
a ServiceAccount that does not set ``automountServiceAccountToken: false``, a Secret that
asks for a service-account token, a Service other than ``ClusterIP`` or with external
IPs, and a pod template that runs as the ServiceAccount helm acts as.

Run as ``python -m services.deploy.postrender --namespace NS --kind KIND ...
--deployer-account NAME``; pure functions below do the checking.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

PREFIX = "wsched-post-render: "
KINDS_SETTING = "WSCHED_TENANT_KINDS"
#: What a pipeline chart renders (pipeline-lib), and nothing a tenant could use to
#: reach beyond its namespace.
DEFAULT_KINDS = (
    "apps/Deployment",
    "ConfigMap",
    "Secret",
    "Service",
    "keda.sh/ScaledObject",
    "ServiceAccount",
)
#: Kinds that are cluster-scoped in every Kubernetes: never a tenant's, even if listed.
CLUSTER_SCOPED = frozenset(
    {
        "Namespace",
        "Node",
        "PersistentVolume",
        "ComponentStatus",
        "rbac.authorization.k8s.io/ClusterRole",
        "rbac.authorization.k8s.io/ClusterRoleBinding",
        "apiextensions.k8s.io/CustomResourceDefinition",
        "apiregistration.k8s.io/APIService",
        "admissionregistration.k8s.io/MutatingWebhookConfiguration",
        "admissionregistration.k8s.io/ValidatingWebhookConfiguration",
        "admissionregistration.k8s.io/ValidatingAdmissionPolicy",
        "admissionregistration.k8s.io/ValidatingAdmissionPolicyBinding",
        "storage.k8s.io/StorageClass",
        "storage.k8s.io/CSIDriver",
        "storage.k8s.io/VolumeAttachment",
        "scheduling.k8s.io/PriorityClass",
        "node.k8s.io/RuntimeClass",
        "networking.k8s.io/IngressClass",
        "policy/PodSecurityPolicy",
        "certificates.k8s.io/CertificateSigningRequest",
        "flowcontrol.apiserver.k8s.io/FlowSchema",
        "flowcontrol.apiserver.k8s.io/PriorityLevelConfiguration",
        "keda.sh/ClusterTriggerAuthentication",
    }
)
_TOKEN_SECRET = "kubernetes.io/service-account-token"  # noqa: S105 - a type, not a secret


@dataclass(frozen=True, kw_only=True)
class Policy:
    """What the rendered objects are checked against."""

    namespace: str
    kinds: frozenset[str]
    #: The tenant's ServiceAccount helm acts as: no pod may run as it.
    deployer_account: str


def kind_of(document: Mapping[str, Any]) -> str:
    """``group/Kind`` (just ``Kind`` in the core group), as the allow-list spells it."""
    api_version = str(document.get("apiVersion") or "")
    group = api_version.rpartition("/")[0]
    kind = str(document.get("kind") or "")
    return f"{group}/{kind}" if group else kind


def refusals(documents: Iterable[Any], policy: Policy) -> list[str]:
    """Every reason to refuse the rendered ``documents`` (empty: all are allowed)."""
    found: list[str] = []
    for document in documents:
        if document is None:
            continue
        if not isinstance(document, Mapping):
            found.append("a rendered document is not a Kubernetes object")
            continue
        found.extend(object_refusals(document, policy))
    return found


def object_refusals(document: Mapping[str, Any], policy: Policy) -> list[str]:
    kind = kind_of(document)
    metadata = document.get("metadata")
    metadata = metadata if isinstance(metadata, Mapping) else {}
    name = f"{kind} {str(metadata.get('name') or '?')!r}"
    if kind in CLUSTER_SCOPED:
        return [
            f"{name} is cluster-scoped: a pipeline chart may only create objects in its namespace"
        ]
    if kind not in policy.kinds:
        allowed = ", ".join(sorted(policy.kinds))
        return [
            f"{name}: kind {kind} is not one a pipeline chart may create (allowed: {allowed}; "
            f"the operator sets them with {KINDS_SETTING})"
        ]
    found: list[str] = []
    namespace = metadata.get("namespace")
    if namespace not in (None, "", policy.namespace):
        found.append(
            f"{name} is in namespace {str(namespace)!r}: a pipeline chart may only create "
            f"objects in its own ({policy.namespace!r})"
        )
    found.extend(_kind_rules(kind, name, document, policy))
    return found


def _kind_rules(kind: str, name: str, document: Mapping[str, Any], policy: Policy) -> Iterator[str]:
    spec = document.get("spec")
    spec = spec if isinstance(spec, Mapping) else {}
    if kind == "ServiceAccount" and document.get("automountServiceAccountToken") is not False:
        yield f"{name} must set automountServiceAccountToken: false (no tokens for tenants' pods)"
    if kind == "ServiceAccount" and _name(document) == policy.deployer_account:
        yield f"{name}: that name is reserved for the account the scheduler deploys as"
    if kind == "Secret" and document.get("type") == _TOKEN_SECRET:
        yield f"{name} asks for a service-account token, which a pipeline chart may not"
    if kind == "Service" and spec.get("type") not in (None, "ClusterIP"):
        yield f"{name} has type {spec.get('type')}: only ClusterIP Services are allowed"
    if kind == "Service" and spec.get("externalIPs"):
        yield f"{name} sets externalIPs, which a pipeline chart may not"
    for pod in pod_specs(document):
        account = pod.get("serviceAccountName") or pod.get("serviceAccount")
        if account == policy.deployer_account:
            yield f"{name} runs its pods as {account!r}, the account the scheduler deploys as"


def _name(document: Mapping[str, Any]) -> str:
    metadata = document.get("metadata")
    return str(metadata.get("name") or "") if isinstance(metadata, Mapping) else ""


def pod_templates(document: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The pod templates an object carries (``spec.template``, a CronJob's
    ``spec.jobTemplate.spec.template``), each ``{metadata, spec}``."""
    spec = document.get("spec")
    found: list[Mapping[str, Any]] = []
    while isinstance(spec, Mapping):
        template = spec.get("template")
        if isinstance(template, Mapping) and isinstance(template.get("spec"), Mapping):
            found.append(template)
        job = spec.get("jobTemplate")
        spec = job.get("spec") if isinstance(job, Mapping) else None
    return found


def pod_specs(document: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    for template in pod_templates(document):
        yield template["spec"]


def _arguments(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="wsched-post-render", description=__doc__)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--kind", action="append", default=[])
    parser.add_argument("--deployer-account", required=True)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Filter stdin to stdout; exit 1 with the reasons when anything is refused."""
    args = _arguments(sys.argv[1:] if argv is None else argv)
    policy = Policy(
        namespace=args.namespace,
        kinds=frozenset(args.kind or DEFAULT_KINDS),
        deployer_account=args.deployer_account,
    )
    text = sys.stdin.read()
    try:
        documents = list(yaml.safe_load_all(text))
    except yaml.YAMLError:
        sys.stderr.write(f"{PREFIX}the chart did not render valid YAML\n")
        return 1
    found = refusals(documents, policy)
    if found:
        sys.stderr.write("".join(f"{PREFIX}{reason}\n" for reason in found))
        return 1
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

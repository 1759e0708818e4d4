"""Pod Security before an install: a server-side dry run of every pod a chart would run.

Pod Security Admission judges Pods, not Deployments: a Deployment with a privileged pod
template is accepted, and its ReplicaSet then fails to create pods, which only the
cluster's events say. So before installing, the deployer builds a Pod from every pod
template the chart renders and creates it with ``dryRun=All`` as the tenant: the
namespace's admission (Pod Security, LimitRange, ResourceQuota) answers as it would for
the real pods, and its refusal becomes the pipeline's reason.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from typing import Any

import yaml
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from services.deploy.postrender import kind_of, pod_templates

log = logging.getLogger("wsched.deploy.helm")

#: Refusals by admission or validation: the chart's to fix. Anything else is transient.
_REFUSED = frozenset({400, 403, 422})
#: A full quota is about the pods running now, not about the chart: the install goes on
#: and the Deployment's pods wait for room, as they would without the dry run.
_QUOTA_FULL = "exceeded quota"


class DryRunUnavailable(Exception):
    """The dry run could not be made (the API server did not answer): try again later."""


def pods_of(manifest: str) -> Iterator[tuple[str, Any]]:
    """``(what, pod)`` for every pod template in a rendered manifest."""
    for document in yaml.safe_load_all(manifest):
        if not isinstance(document, Mapping):
            continue
        metadata = document.get("metadata")
        name = str(metadata.get("name") or "?") if isinstance(metadata, Mapping) else "?"
        for index, template in enumerate(pod_templates(document)):
            template_meta = template.get("metadata")
            labels = template_meta.get("labels") if isinstance(template_meta, Mapping) else None
            spec = dict(template["spec"])
            # The chart's own ServiceAccount does not exist before the install, and the
            # ServiceAccount admission would refuse the Pod for it; Pod Security does not
            # look at the account.
            spec.pop("serviceAccountName", None)
            spec.pop("serviceAccount", None)
            pod: Any = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": f"{name[:40]}-dry-run-{index}", "labels": labels or {}},
                "spec": spec,
            }
            yield f"{kind_of(document)} {name!r}", pod


def admission_refusals(api: k8s.ApiClient, namespace: str, manifest: str) -> list[str]:
    """What the namespace's admission says against each pod of ``manifest`` (empty: all
    would be admitted). ``api`` must act as the tenant. Blocking: call it in a thread."""
    core = k8s.CoreV1Api(api)
    found: list[str] = []
    for what, pod in pods_of(manifest):
        try:
            core.create_namespaced_pod(namespace, pod, dry_run="All")
        except ApiException as err:
            if err.status not in _REFUSED:
                raise DryRunUnavailable(f"the Pod Security dry run failed: {err.reason}") from err
            message = _message(err)
            if _QUOTA_FULL in message:
                log.info("namespace %s: %s (the install goes on)", namespace, message)
                continue
            found.append(f"{what}: {message}")
    return found


def _message(err: ApiException) -> str:
    try:
        body = json.loads(err.body or "")
    except (TypeError, ValueError):
        return str(err.reason)
    message = body.get("message") if isinstance(body, dict) else None
    return str(message or err.reason)

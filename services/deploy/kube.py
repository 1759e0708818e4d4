"""The Kubernetes API client, configured once for the deployers and the scaler.

``kubeconfig`` given: that file (and ``context``). Otherwise the pod's service account
when running in a cluster, else ``$KUBECONFIG`` or ``~/.kube/config`` as kubectl does.
Each caller gets its own :class:`ApiClient`; the library's global configuration is never
touched, so two clusters in one process (tests) stay apart.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import cast

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.config.config_exception import ConfigException

log = logging.getLogger("wsched.deploy.kube")

#: Labels our namespaces carry: how an operator finds (and a NetworkPolicy selects) them
#: (services/deploy/tenancy.py puts them there).
MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "workload-scheduler"
TENANT_LABEL = "wsched.io/tenant"


class KubeUnavailable(Exception):
    """No usable Kubernetes configuration, or the API server cannot be reached."""


def api_client(kubeconfig: Path | None = None, context: str | None = None) -> k8s.ApiClient:
    if kubeconfig is not None:
        return cast(
            k8s.ApiClient,
            k8s_config.new_client_from_config(  # type: ignore[no-untyped-call]
                config_file=str(kubeconfig), context=context
            ),
        )
    configuration = k8s.Configuration()
    try:
        k8s_config.load_incluster_config(  # type: ignore[no-untyped-call]
            client_configuration=configuration
        )
    except ConfigException:
        try:
            return cast(
                k8s.ApiClient,
                k8s_config.new_client_from_config(context=context),  # type: ignore[no-untyped-call]
            )
        except (ConfigException, OSError) as err:
            raise KubeUnavailable(
                "no Kubernetes configuration: not running in a cluster and no kubeconfig "
                f"found; set WSCHED_KUBECONFIG ({err})"
            ) from err
    return k8s.ApiClient(configuration)

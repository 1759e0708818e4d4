"""Kubernetes names of a pipeline's workers: the tenant's namespace and the Helm release.

Shared by the deployers and the scheduler, whose ``server_scheduler_queue_length`` gauge
carries the same names as labels (the seed design's KEDA contract: ``worker`` is the
release, ``namespace`` the tenant's namespace).
"""

from __future__ import annotations

import hashlib
import secrets

#: Helm's limit on release names (they prefix generated object names).
RELEASE_MAX = 53
NAMESPACE_PREFIX = "wsched-"


def namespace_for(tenant: str) -> str:
    """Tenant names are DNS labels of at most 40 characters, so this stays under 63."""
    return f"{NAMESPACE_PREFIX}{tenant}"


def spare_namespace(tenant: str) -> str:
    """Another namespace for a tenant whose default one a deleted tenant of the same name
    had (it may still be terminating): the default with a random suffix (56 chars at
    most)."""
    return f"{namespace_for(tenant)}-{secrets.token_hex(4)}"


def release_name(tenant: str, application: str, pipeline: str) -> str:
    """``<tenant>-<application>-<pipeline>``, shortened with a hash suffix past 53 chars.

    The suffix keeps two long names that share a prefix apart.
    """
    full = f"{tenant}-{application}-{pipeline}"
    if len(full) <= RELEASE_MAX:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:8]
    return f"{full[: RELEASE_MAX - 9].rstrip('-')}-{digest}"

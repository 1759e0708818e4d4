"""Provisioning of the real components: Apache Kafka, TiDB, helm, etcd and kube-apiserver,
and an OCI registry (crane) for the tests of ``oci://`` charts.

Everything is pinned, built or resolved once into a user cache directory and reused;
the test fixtures and ``wsched dev`` start the cached binaries on free loopback ports.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from services.infra.cache import Cache

#: component name -> module whose ``provision(cache)`` builds or resolves it
MODULES = {
    "kafka": "services.infra.kafka",
    "tidb": "services.infra.tidb",
    "helm": "services.infra.helm",
    "kube": "services.infra.kube",
    "registry": "services.infra.registry",
}


def provision_all(cache_dir: Path, names: Iterable[str]) -> Iterator[tuple[str, float]]:
    """Provision each named component in turn, yielding (name, seconds taken)."""
    cache = Cache(root=cache_dir)
    for name in names:
        started = time.monotonic()
        importlib.import_module(MODULES[name]).provision(cache)
        yield name, time.monotonic() - started

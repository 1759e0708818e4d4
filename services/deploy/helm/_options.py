"""The Helm deployer's configuration and the names of a pipeline's release."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from services.deploy import postrender
from services.deploy.helm._allowlist import ChartAllowList
from services.deploy.naming import namespace_for, release_name
from services.deploy.tenancy import TenantPolicy
from services.store.control import PipelineNameRow

#: Our post-renderer, run by helm with this interpreter.
POST_RENDERER = (sys.executable, "-m", "services.deploy.postrender")


@dataclass(frozen=True, kw_only=True)
class WorkerObservability:
    """Where deployed workers send their spans and how they log (the operator's own
    settings, with ``WSCHED_WORKERS_OBSERVABILITY``)."""

    #: OTLP/gRPC; None: the agents make no spans.
    otlp_endpoint: str | None = None
    log_format: str = "text"

    def values(self) -> dict[str, str]:
        """As the pipeline chart's ``observability`` values: both keys, so that they
        replace whatever a pipeline's own values say (empty: no spans)."""
        return {"otlp_endpoint": self.otlp_endpoint or "", "log_format": self.log_format}


@dataclass(frozen=True, kw_only=True)
class HelmOptions:
    #: The scheduler's gRPC address the workers poll.
    scheduler: str
    #: Relative chart paths are resolved against this directory.
    base_dir: Path
    #: The chart sources tenants may use (``WSCHED_CHART_ROOTS``, ``..._REPOSITORIES``).
    charts: ChartAllowList
    #: Where local charts with dependencies are prepared (built copies).
    work_dir: Path
    executable: str = "helm"
    kubeconfig: Path | None = None
    kube_context: str | None = None
    #: ``repository:tag`` of the agents' image, replacing each chart's ``image``.
    worker_image: str | None = None
    #: ``builtin``: the scheduler's scaler sets replicas, so charts leave them alone.
    autoscaler: str = "none"
    timeout_s: int = 300
    #: Traces and log format injected into every release; None: each chart's own.
    observability: WorkerObservability | None = None
    #: Tenant namespaces: Pod Security, quota, limits, network policy, helm's account.
    tenants: TenantPolicy = field(default_factory=TenantPolicy)
    #: The kinds a tenant's chart may render (``group/Kind``).
    kinds: tuple[str, ...] = postrender.DEFAULT_KINDS
    post_renderer: tuple[str, ...] = POST_RENDERER


@dataclass(frozen=True, kw_only=True)
class PipelineNames:
    tenant: str
    application: str
    pipeline: str
    #: The tenant's own namespace; None: the default one for its name.
    tenant_namespace: str | None = None

    @property
    def release(self) -> str:
        return release_name(self.tenant, self.application, self.pipeline)

    @property
    def namespace(self) -> str:
        return self.tenant_namespace or namespace_for(self.tenant)


def names_from_store(
    lookup: Callable[[str], PipelineNameRow | None],
) -> Callable[[str], PipelineNames | None]:
    """Adapts the control store's name lookup."""

    def names_of(pipeline_id: str) -> PipelineNames | None:
        found = lookup(pipeline_id)
        if found is None:
            return None
        return PipelineNames(
            tenant=found.tenant,
            application=found.application,
            pipeline=found.pipeline,
            tenant_namespace=found.namespace,
        )

    return names_of

"""The Helm deployer: each pipeline's chart is a Helm release in its tenant's namespace.

``WSCHED_DEPLOYER=helm``. A pipeline's ``chart`` is one of

- a local chart directory or ``.tgz`` archive (relative paths are taken from the API's
  working directory) inside one of the operator's chart roots. A directory's
  ``file://`` dependencies are built into a private copy, so a chart such as
  ``charts/examples/echo`` installs as it is in the repository;
- ``oci://registry/path/name`` with ``chart_version`` (or the newest);
- ``https://host/path/name-1.0.0.tgz``, a chart archive;
- ``https://host/path/name``: the chart ``name`` of the chart repository at
  ``https://host/path`` (whose ``index.yaml`` lists it), at ``chart_version``;

URLs only within the operator's allowed repositories and registries (``_allowlist``).
helm acts as the tenant's ServiceAccount and passes every render through our
post-renderer (``_as_tenant``, :mod:`services.deploy.postrender`); each pod the chart
would run is first judged by the namespace's admission in a dry run (``_admission``);
what the tenant reads of a failure names no path or address of the API's machine
(``_scrub``).

The release is named ``<tenant>-<application>-<pipeline>`` (services/deploy/naming.py)
in the namespace ``wsched-<tenant>``, prepared before every deploy as
:mod:`services.deploy.tenancy` says. The values are the
chart's, then the operator's image override, then the pipeline's ``values`` and
``scaling``, then what the deployer injects, which always wins: ``pipelineId``,
``scheduler.address``, ``workerToken.value`` (the chart keeps it in a Secret),
``scaling.autoscaler`` when the scheduler's built-in scaler sets the replicas, and
``observability`` (the API's OTLP endpoint and log format) when the operator passes
them on (``WSCHED_WORKERS_OBSERVABILITY``).

What was deployed is fingerprinted (chart, version, values; the token by digest) into
the release's description, so :meth:`HelmDeployer.in_place` can tell a release that is
missing, failed or stale from one that is current.

The deployer (``_deployer``) is the port, configured by ``_options``; where a chart comes
from (``_sources``), the values and fingerprint (``_values``), the dependency builds
(``_dependencies``) and the sorting of helm's failures (``_errors``) are pure or
self-contained helpers it calls. Callers import from this package (only the
helpers' own unit tests reach into a module).
"""

from __future__ import annotations

from services.deploy.helm._allowlist import ChartAllowList, ChartNotAllowed
from services.deploy.helm._deployer import KIND, HelmDeployer
from services.deploy.helm._errors import HelmUnavailable
from services.deploy.helm._options import (
    HelmOptions,
    PipelineNames,
    WorkerObservability,
    names_from_store,
)
from services.deploy.helm._sources import ChartSource, chart_source

__all__ = [
    "KIND",
    "ChartAllowList",
    "ChartNotAllowed",
    "ChartSource",
    "HelmDeployer",
    "HelmOptions",
    "HelmUnavailable",
    "PipelineNames",
    "WorkerObservability",
    "chart_source",
    "names_from_store",
]

"""The deployer port: puts a pipeline's workers in place (Helm chart, local processes...).

Kept small on purpose: the reconciler only needs "make it so" and "take it away", and
records the status each call returns.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from services.store.control import Pipeline


@dataclass(frozen=True, kw_only=True)
class DeploymentStatus:
    """What a deployer reports; stored with the pipeline and shown by the API."""

    status: str
    revision: int
    detail: str = ""
    #: Which deployer put the workers in place ("local" ...), when it matters later: local
    #: processes are gone after a restart of the API, so the reconciler starts them again.
    deployer: str = ""
    #: Where a Helm release lives, so that it is uninstalled from there later.
    release: str = ""
    namespace: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "status": self.status,
            "revision": self.revision,
            "detail": self.detail,
        }
        for key in ("deployer", "release", "namespace"):
            if value := getattr(self, key):
                out[key] = value
        return out


class DeployFailed(Exception):
    """The chart could not be deployed; the message is shown as the pipeline's reason."""


class Deployer(Protocol):
    #: Recorded as ``DeploymentStatus.deployer``; "" for a deployer with nothing to check.
    kind: str

    async def deploy(self, pipeline: Pipeline) -> DeploymentStatus:
        """Install or upgrade the pipeline's workers (idempotent); raise DeployFailed."""
        ...

    async def remove(self, pipeline: Pipeline) -> None:
        """Remove the pipeline's workers; removing what is not there is not an error."""
        ...

    async def in_place(self, pipeline: Pipeline) -> bool:
        """Whether the workers this deployer put in place are there and current (the
        reconciler deploys again those that are not: lost processes, a deleted release)."""
        ...

    async def remove_tenant(self, namespace: str) -> None:
        """Remove a deleted tenant's namespace (once its pipelines are removed); removing
        what is not there is not an error. The deletion may finish later."""
        ...


def _revision(deployment: Mapping[str, Any]) -> int:
    value = deployment.get("revision", 0)
    return value if isinstance(value, int) else 0


class NoopDeployer:
    """Deploys nothing and says "deployed": for tests, and until a real deployer is set.

    Each deploy bumps the revision recorded with the pipeline, as Helm would.
    """

    kind = ""

    def __init__(self) -> None:
        self.deployed: dict[str, DeploymentStatus] = {}
        self.removed: list[str] = []
        self.removed_namespaces: list[str] = []

    async def deploy(self, pipeline: Pipeline) -> DeploymentStatus:
        status = DeploymentStatus(status="deployed", revision=_revision(pipeline.deployment) + 1)
        self.deployed[pipeline.id] = status
        return status

    async def remove(self, pipeline: Pipeline) -> None:
        self.deployed.pop(pipeline.id, None)
        self.removed.append(pipeline.id)

    async def in_place(self, pipeline: Pipeline) -> bool:
        return True

    async def remove_tenant(self, namespace: str) -> None:
        self.removed_namespaces.append(namespace)

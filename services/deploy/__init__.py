"""Deploying a pipeline's workers, behind the :class:`Deployer` port."""

from services.deploy.ports import Deployer, DeployFailed, DeploymentStatus, NoopDeployer

__all__ = ["DeployFailed", "Deployer", "DeploymentStatus", "NoopDeployer"]

"""helm acting for a tenant: as the tenant's ServiceAccount, through our post-renderer.

Every helm command the deployer runs for a pipeline impersonates the ServiceAccount of
the pipeline's tenant (``--kube-as-user system:serviceaccount:<namespace>:<account>``),
so what a chart installs and what its templates ``lookup`` are limited by that
account's RoleBinding in the tenant's namespace, not by the API's own rights. Installs,
upgrades and renders also pass every manifest through :mod:`services.deploy.postrender`,
and no command runs a chart's hooks: helm 3 does not post-render them.
"""

from __future__ import annotations

import typing as t
from collections.abc import Sequence
from pathlib import Path

from pyhelm3 import Client, Command

#: Commands that render a chart, and so take a post-renderer.
_RENDERING = frozenset({"upgrade", "install", "template"})
#: Commands that would run a chart's hooks. Helm 3 does not pass hooks through the
#: post-renderer, so they never run (and a chart with hooks is refused before).
_HOOKED = frozenset({"upgrade", "install", "uninstall", "rollback"})


class TenantCommand(Command):  # type: ignore[misc]  # pyhelm3 is untyped
    """pyhelm3's command runner, with the impersonation and post-renderer flags added."""

    def __init__(self, *, user: str, post_renderer: Sequence[str], **kwargs: t.Any) -> None:
        super().__init__(**kwargs)
        self._user = user
        self._post_renderer = tuple(post_renderer)

    async def run(self, command: list[t.Any], input: bytes | None = None) -> bytes:
        command = list(command)
        if command and command[0] in _RENDERING:
            # A dry run renders against the cluster, so `lookup` answers as it will.
            command = ["--dry-run=server" if part == "--dry-run" else part for part in command]
            executable, *args = self._post_renderer
            command += ["--post-renderer", executable]
            command += [f"--post-renderer-args={arg}" for arg in args]
        if command and command[0] in _HOOKED:
            command.append("--no-hooks")
        if command and command[0] in ("upgrade", "install"):
            # A chart's crds/ are installed unrendered, before any check: never.
            command.append("--skip-crds")
        command += ["--kube-as-user", self._user]
        return t.cast(bytes, await super().run(command, input))


def post_renderer(
    base: Sequence[str], *, namespace: str, kinds: Sequence[str], deployer_account: str
) -> list[str]:
    """The post-renderer's command line for one tenant namespace."""
    command = [*base, f"--namespace={namespace}", f"--deployer-account={deployer_account}"]
    return command + [f"--kind={kind}" for kind in kinds]


def tenant_client(
    *,
    user: str,
    post_renderer: Sequence[str],
    executable: str,
    kubeconfig: Path | None,
    kube_context: str | None,
    timeout_s: int,
) -> tuple[Client, TenantCommand]:
    """A pyhelm3 client (and its command runner, for dry runs) acting as ``user``."""
    command = TenantCommand(
        user=user,
        post_renderer=post_renderer,
        executable=executable,
        kubeconfig=kubeconfig,
        kubecontext=kube_context,
        default_timeout=f"{timeout_s}s",
    )
    return Client(command, executable=executable), command

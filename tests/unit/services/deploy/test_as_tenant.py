"""helm acting for a tenant: the flags every command gets (no helm is run here)."""

from __future__ import annotations

from typing import Any

import pyhelm3
import pytest

from services.deploy.helm._as_tenant import TenantCommand, post_renderer


@pytest.fixture
def ran(monkeypatch: pytest.MonkeyPatch) -> list[list[Any]]:
    commands: list[list[Any]] = []

    async def run(self: Any, command: list[Any], input: bytes | None = None) -> bytes:
        commands.append(command)
        return b""

    monkeypatch.setattr(pyhelm3.Command, "run", run)
    return commands


def command() -> TenantCommand:
    renderer = post_renderer(
        ["/venv/python", "-m", "services.deploy.postrender"],
        namespace="wsched-acme",
        kinds=["ConfigMap", "apps/Deployment"],
        deployer_account="wsched-tenant",
    )
    return TenantCommand(
        user="system:serviceaccount:wsched-acme:wsched-tenant", post_renderer=renderer
    )


async def test_renders_go_through_the_post_renderer_as_the_tenant_without_hooks(
    ran: list[list[Any]],
) -> None:
    await command().run(["upgrade", "r", "chart", "--dry-run"])
    [argv] = ran
    assert argv[:3] == ["upgrade", "r", "chart"]
    assert "--dry-run=server" in argv and "--dry-run" not in argv
    at = argv.index("--post-renderer")
    assert argv[at + 1 : at + 8] == [
        "/venv/python",
        "--post-renderer-args=-m",
        "--post-renderer-args=services.deploy.postrender",
        "--post-renderer-args=--namespace=wsched-acme",
        "--post-renderer-args=--deployer-account=wsched-tenant",
        "--post-renderer-args=--kind=ConfigMap",
        "--post-renderer-args=--kind=apps/Deployment",
    ]
    assert "--no-hooks" in argv and "--skip-crds" in argv
    assert argv[-2:] == ["--kube-as-user", "system:serviceaccount:wsched-acme:wsched-tenant"]


async def test_every_command_acts_as_the_tenant(ran: list[list[Any]]) -> None:
    for argv in (["status", "r"], ["uninstall", "r"], ["history", "r"]):
        await command().run(list(argv))
    assert all(argv[-2] == "--kube-as-user" for argv in ran)
    assert ["--post-renderer" in argv for argv in ran] == [False, False, False]
    assert ["--no-hooks" in argv for argv in ran] == [False, True, False]

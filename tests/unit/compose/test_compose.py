"""compose/ cannot run here (no Docker engine), so check what can be checked: the file
parses, every service of ours runs a real `wsched` command, every WSCHED_ variable it sets
is a real setting, and the echo worker's definition is the echo chart's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
import yaml
from typer.core import TyperGroup

from services.cli import app
from services.infra.helm import HELM_VERSION
from services.settings import Settings
from services.worker.definition import load_definition
from services.worker.settings import ExecutorSettings, WorkerSettings

ROOT = Path(__file__).resolve().parents[3]
COMPOSE = ROOT / "compose" / "docker-compose.yml"


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def ours(services: dict[str, Any]) -> dict[str, Any]:
    return {name: s for name, s in services.items() if s.get("image") == "workload-scheduler:dev"}


def known_env() -> set[str]:
    names: set[str] = set()
    for settings, prefix in (
        (Settings, "WSCHED_"),
        (WorkerSettings, "WSCHED_WORKER_"),
        (ExecutorSettings, "WSCHED_WORKER_EXECUTOR_"),
    ):
        names |= {prefix + field.upper() for field in settings.model_fields}
    return names


def test_the_stack_has_the_documented_services() -> None:
    services = compose()["services"]
    assert {"kafka", "tidb", "migrate", "api", "scheduler", "echo-worker", "echo-executor"} <= set(
        services
    )
    assert set(ours(services)) == {"migrate", "api", "scheduler", "echo-worker", "echo-executor"}


def test_every_service_of_ours_runs_a_real_wsched_command() -> None:
    group = typer.main.get_command(app)
    assert isinstance(group, TyperGroup)
    ctx = group.context_class(group)
    for name, service in ours(compose()["services"]).items():
        argv = service["command"]
        resolved = group.get_command(ctx, argv[0])
        assert resolved is not None, f"{name}: wsched has no command {argv[0]!r}"
        if isinstance(resolved, TyperGroup):
            assert resolved.get_command(ctx, argv[1]) is not None, f"{name}: {argv}"
        else:
            resolved.make_context(argv[0], list(argv[1:]))  # raises on an unknown option


def test_every_wsched_variable_is_a_real_setting() -> None:
    valid = known_env()
    for name, service in ours(compose()["services"]).items():
        for key in service.get("environment", {}):
            if key.startswith("WSCHED_"):
                assert key in valid, f"{name}: {key} is not a setting of any wsched process"


def test_the_echo_worker_runs_the_echo_charts_definition() -> None:
    chart_values = yaml.safe_load((ROOT / "charts/examples/echo/values.yaml").read_text())
    definition = ROOT / "compose" / "echo-pipeline.json"
    assert json.loads(definition.read_text()) == {"pipeline": chart_values["pipeline"]}
    assert [step.executor for step in load_definition(definition).pipeline] == ["echo"]
    worker = compose()["services"]["echo-worker"]["environment"]
    assert worker["WSCHED_WORKER_EXECUTORS"] == "echo=unix:///mnt/pipe/echo.sock"


def test_the_image_runs_wsched_with_every_package() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["wsched"]' in dockerfile
    for package in ("services", "actors", "protos", "charts"):
        assert f"COPY {package} ./{package}" in dockerfile


def test_the_image_has_the_helm_our_tests_pin() -> None:
    """The API's Helm deployer runs helm inside the image."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"FROM alpine/helm:{HELM_VERSION.removeprefix('v')} AS helm" in dockerfile
    assert "COPY --from=helm /usr/bin/helm /usr/local/bin/helm" in dockerfile

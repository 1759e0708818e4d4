"""compose/ cannot run here (no Docker engine), so check what can be checked: the file
parses, every service of ours runs a real `wsched` command, every WSCHED_ variable it sets
is a real setting, and the echo worker's definition is the echo chart's."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from services.infra.helm import HELM_VERSION
from services.worker.definition import load_definition
from tests.contract import check_command, check_settings

ROOT = Path(__file__).resolve().parents[3]
COMPOSE = ROOT / "compose" / "docker-compose.yml"


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def ours(services: dict[str, Any]) -> dict[str, Any]:
    return {name: s for name, s in services.items() if s.get("image") == "workload-scheduler:dev"}


def test_the_stack_has_the_documented_services() -> None:
    services = compose()["services"]
    assert {"kafka", "tidb", "migrate", "api", "scheduler", "echo-worker", "echo-executor"} <= set(
        services
    )
    assert set(ours(services)) == {"migrate", "api", "scheduler", "echo-worker", "echo-executor"}


def test_every_service_of_ours_runs_a_real_wsched_command() -> None:
    for name, service in ours(compose()["services"]).items():
        check_command(service["command"], name)


def test_every_wsched_variable_is_a_real_setting_with_a_valid_value() -> None:
    for name, service in ours(compose()["services"]).items():
        environment = {k: interpolated(str(v)) for k, v in service.get("environment", {}).items()}
        check_settings(environment, name)


def interpolated(value: str) -> str:
    """``${NAME:-default}`` as compose reads it when NAME is unset."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def test_unset_variables_take_compose_defaults() -> None:
    assert interpolated("${WSCHED_SECRET_KEY:-}") == ""
    assert interpolated("${WSCHED_OPERATOR_KEY:-change-me}") == "change-me"


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


def test_the_ocr_example_can_build_an_image_for_each_executor() -> None:
    """Every executor of the ocr chart has a build target, from the wsched image, that
    runs as the user pipeline-lib's pods run as, with the tool its commands call."""
    chart = ROOT / "charts" / "examples" / "ocr"
    values = yaml.safe_load((chart / "values.yaml").read_text())
    dockerfile = (chart / "images" / "Dockerfile").read_text()
    stages = re.findall(r"^FROM \$\{WSCHED_IMAGE\} AS (\S+)$", dockerfile, flags=re.MULTILINE)
    assert sorted(stages) == sorted(values["executors"])
    for step in values["pipeline"]:
        tool = step["commands"][0].split()[0]
        section = dockerfile.split(f" AS {step['executor']}\n", 1)[1].split("\nFROM ", 1)[0]
        assert f"install -y --no-install-recommends {tool}" in section, step["executor"]
        assert section.rstrip().endswith("USER 10001"), step["executor"]
        repository = values["executors"][step["executor"]]["image"]["repository"]
        assert repository.endswith(f"wsched-{step['executor']}")
    assert "images/" in (chart / ".helmignore").read_text().split()

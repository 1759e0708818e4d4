"""The charts' observability values, rendered by the real helm: the scheduler chart's
optional Grafana dashboard ConfigMap and the log format and trace settings of its
processes; and those the Helm deployer passes on to a pipeline chart's workers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.deploy.helm import WorkerObservability
from tests.contract import check_settings
from tests.integration.charts.rendering import built, render
from tests.integration.charts.test_pipeline_charts import (
    TWO_EXECUTORS,
    containers_by_name,
    env_of,
)
from tests.integration.charts.test_scheduler_chart import (
    CHART,
    container,
    of_kind,
    render_chart,
)

ENDPOINT = "http://otel-collector.monitoring:4317"
#: What only traced and JSON-logging workers are given.
WORKER_OBSERVABILITY = {
    "WSCHED_WORKER_OTLP_ENDPOINT",
    "OTEL_RESOURCE_ATTRIBUTES",
    "WSCHED_WORKER_LOG_FORMAT",
    "WSCHED_WORKER_EXECUTOR_LOG_FORMAT",
}

pytestmark = pytest.mark.integration


async def test_the_dashboard_configmap_is_optional_and_holds_the_dashboard(
    helm_bin: Path,
) -> None:
    assert "wsched-dashboard" not in of_kind(await render_chart(helm_bin), "ConfigMap")

    values = {
        "metrics": {
            "dashboard": {"enabled": True, "annotations": {"grafana_folder": "Workload Scheduler"}}
        }
    }
    config_map = of_kind(await render_chart(helm_bin, values), "ConfigMap")["wsched-dashboard"]
    labels = config_map["metadata"]["labels"]
    assert labels["grafana_dashboard"] == "1"  # the sidecar's default label
    assert labels["app.kubernetes.io/part-of"] == "workload-scheduler"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "Workload Scheduler"}
    shipped = json.loads((CHART / "dashboards" / "wsched.json").read_text())
    assert json.loads(config_map["data"]["wsched.json"]) == shipped


async def test_log_format_and_tracing_reach_the_api_and_the_scheduler(helm_bin: Path) -> None:
    def env_of(objects: dict[tuple[str, str], dict[str, object]]) -> dict[str, dict[str, str]]:
        return {
            name: {e["name"]: e["value"] for e in container(d)["env"] if "value" in e}
            for name, d in of_kind(objects, "Deployment").items()
        }

    plain = env_of(await render_chart(helm_bin))
    for env in plain.values():
        assert env["WSCHED_LOG_FORMAT"] == "text" and "WSCHED_OTLP_ENDPOINT" not in env

    values = {
        "logFormat": "json",
        "tracing": {"otlpEndpoint": "http://otel-collector.monitoring:4317", "sampleRatio": 0.25},
    }
    traced = env_of(await render_chart(helm_bin, values))
    assert set(traced) == {"wsched-api", "wsched-scheduler"}
    for name, env in traced.items():
        assert env["WSCHED_LOG_FORMAT"] == "json"
        assert env["WSCHED_OTLP_ENDPOINT"] == "http://otel-collector.monitoring:4317"
        assert env["WSCHED_TRACE_SAMPLE_RATIO"] == "0.25"
        check_settings(env, name)


async def test_the_api_passes_its_observability_on_to_workers_only_when_told(
    helm_bin: Path,
) -> None:
    def api_env(objects: dict[tuple[str, str], dict[str, object]]) -> dict[str, str]:
        api = of_kind(objects, "Deployment")["wsched-api"]
        return {e["name"]: e["value"] for e in container(api)["env"] if "value" in e}

    traced = {"logFormat": "json", "tracing": {"otlpEndpoint": ENDPOINT}}
    assert "WSCHED_WORKERS_OBSERVABILITY" not in api_env(await render_chart(helm_bin, traced))
    told = {**traced, "deployer": {"type": "helm", "workersObservability": True}}
    env = api_env(await render_chart(helm_bin, told))
    assert env["WSCHED_WORKERS_OBSERVABILITY"] == "true"
    check_settings(env, "wsched-api")


async def test_worker_pods_get_the_observability_the_deployer_injects(
    helm_bin: Path, charts: Path
) -> None:
    chart = await built(helm_bin, charts, "bare")

    def pod_env(rendered: dict[str, dict[str, object]]) -> dict[str, dict[str, object]]:
        pod = rendered["Deployment"]["spec"]["template"]["spec"]  # type: ignore[index]
        return {name: env_of(c) for name, c in containers_by_name(pod).items()}

    # By default (the operator passed nothing on): none of them, in any container.
    for name, env in pod_env(await render(helm_bin, chart, TWO_EXECUTORS)).items():
        assert not WORKER_OBSERVABILITY & set(env), name

    # The values the deployer injects (services/deploy/helm), as the chart reads them.
    injected = WorkerObservability(otlp_endpoint=ENDPOINT, log_format="json").values()
    values = {**TWO_EXECUTORS, "observability": injected}
    containers = pod_env(await render(helm_bin, chart, values, namespace="wsched-acme"))
    agent = containers.pop("agent")
    assert agent["WSCHED_WORKER_OTLP_ENDPOINT"] == ENDPOINT
    assert agent["WSCHED_WORKER_LOG_FORMAT"] == "json"
    attributes = dict(
        pair.split("=", 1) for pair in str(agent["OTEL_RESOURCE_ATTRIBUTES"]).split(",")
    )
    assert attributes == {
        "service.instance.id": "$(WSCHED_WORKER_NAME)",
        "k8s.pod.name": "$(WSCHED_WORKER_NAME)",
        "k8s.namespace.name": "wsched-acme",
        "k8s.deployment.name": "demo",
        "wsched.pipeline_id": "0193-two",
    }
    # Kubernetes expands $(VAR) only from variables defined before it in the container.
    names = list(agent)
    assert names.index("WSCHED_WORKER_NAME") < names.index("OTEL_RESOURCE_ATTRIBUTES")
    check_settings({k: str(v) for k, v in agent.items() if isinstance(v, str)}, "agent")
    assert set(containers) == {"executor-fetch", "executor-count-words"}
    for name, env in containers.items():
        assert env["WSCHED_WORKER_EXECUTOR_LOG_FORMAT"] == "json", name
        assert "WSCHED_WORKER_OTLP_ENDPOINT" not in env, name  # executors make no spans

    # A log format alone (no endpoint): JSON lines, and still no spans.
    logs_only = WorkerObservability(otlp_endpoint=None, log_format="json").values()
    agent = pod_env(await render(helm_bin, chart, {**TWO_EXECUTORS, "observability": logs_only}))[
        "agent"
    ]
    assert agent["WSCHED_WORKER_LOG_FORMAT"] == "json"
    assert "WSCHED_WORKER_OTLP_ENDPOINT" not in agent and "OTEL_RESOURCE_ATTRIBUTES" not in agent

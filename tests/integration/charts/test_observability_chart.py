"""The scheduler chart's observability values, rendered by the real helm: the optional
Grafana dashboard ConfigMap, and the log format and trace settings of the processes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.contract import check_settings
from tests.integration.charts.test_scheduler_chart import (
    CHART,
    container,
    of_kind,
    render_chart,
)

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

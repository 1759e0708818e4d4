"""The charts with the real helm: every chart lints and renders; the base chart's objects.

Each test copies ``charts/`` to its own directory (the ``charts`` fixture) and runs
``helm dependency build`` there (the examples use the library through
``file://../../pipeline-lib``), so that no generated archive lands in the repository.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pyhelm3
import pytest
from kubernetes import client as k8s

from services.deploy.postrender import DEFAULT_KINDS, Policy, refusals
from services.infra.kube import KubeCluster
from services.worker.definition import parse_definition
from tests.contract import check_command, check_settings
from tests.integration.charts.rendering import (
    CHARTS,
    built,
    chart_metadata,
    ci_values_files,
    discover_charts,
    helm,
    load_yaml,
    render,
    render_all,
    with_dependencies,
)

pytestmark = pytest.mark.integration

#: Every chart under charts/, found by its Chart.yaml: a new chart is checked as it lands.
ALL_CHARTS = discover_charts()
EXAMPLES = ("echo", "ocr")
PIPE = "/mnt/pipe"

TWO_EXECUTORS: dict[str, Any] = {
    "pipelineId": "0193-two",
    "workerToken": {"value": "wst_secret"},
    "scheduler": {"address": "wsched-scheduler.wsched:50051"},
    "pipeline": [
        {"executor": "fetch", "commands": ["wget -O /mnt/pipe/in.txt {{url}}"]},
        {"executor": "count_words", "commands": ["wc -w < /mnt/pipe/in.txt"]},
    ],
    "executors": {
        "fetch": {"image": {"repository": "example/wsched-wget", "tag": "1.2"}},
        "count_words": {"resources": {"limits": {"memory": "64Mi"}}},
    },
}


def containers_by_name(pod: dict[str, Any], key: str = "containers") -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in pod.get(key, [])}


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_every_chart_is_found() -> None:
    names = {chart_metadata(CHARTS / path)["name"] for path in ALL_CHARTS}
    assert {"pipeline-lib", "echo", "ocr", "workload-scheduler"} <= names


@pytest.mark.parametrize("chart", ALL_CHARTS, ids=str)
async def test_every_chart_passes_strict_lint(helm_bin: Path, charts: Path, chart: Path) -> None:
    path = await with_dependencies(helm_bin, charts / chart)
    # With its defaults, and with each set of values it is checked with (ci/*-values.yaml).
    runs: list[list[str]] = [[]] + [["--values", str(f)] for f in ci_values_files(path)]
    for extra in runs:
        output = await helm(helm_bin, "lint", "--strict", str(path), *extra)
        assert "1 chart(s) linted, 0 chart(s) failed" in output, (extra, output)


@pytest.mark.parametrize(
    "chart",
    [path for path in ALL_CHARTS if chart_metadata(CHARTS / path).get("type") != "library"],
    ids=str,
)
async def test_every_application_chart_renders(helm_bin: Path, charts: Path, chart: Path) -> None:
    # A library chart renders nothing of its own: its templates are checked through the
    # examples that include them.
    path = await with_dependencies(helm_bin, charts / chart)
    values = [load_yaml(f) for f in ci_values_files(path)] or [{}]
    for each in values:
        docs = await render_all(helm_bin, path, each)
        kinds = {doc["kind"] for doc in docs}
        assert "Deployment" in kinds, (chart, kinds)
        for doc in docs:
            assert doc["apiVersion"] and doc["metadata"]["name"], doc


@pytest.mark.parametrize("example", EXAMPLES)
async def test_every_example_renders_with_its_defaults(
    helm_bin: Path, charts: Path, example: str
) -> None:
    rendered = await render(helm_bin, await built(helm_bin, charts, example))
    assert set(rendered) == {"ConfigMap", "Secret", "Deployment"}  # no KEDA by default
    definition = json.loads(rendered["ConfigMap"]["data"]["pipeline.json"])
    assert definition["pipeline"], definition


@pytest.mark.parametrize("example", EXAMPLES)
async def test_every_example_passes_the_post_renderer_with_keda_and_sidecars(
    helm_bin: Path, charts: Path, example: str
) -> None:
    """What pipeline-lib renders, with every option that adds objects or containers, is
    what a tenant's chart may create (services/deploy/postrender.py)."""
    values = {"nativeSidecars": True, "scaling": {"keda": {"enabled": True}}}
    docs = await render_all(helm_bin, await built(helm_bin, charts, example), values)
    policy = Policy(namespace="pipelines", kinds=frozenset(DEFAULT_KINDS), deployer_account="x")
    assert {doc["kind"] for doc in docs} == {"ConfigMap", "Secret", "Deployment", "ScaledObject"}
    assert refusals(docs, policy) == []
    pod = docs[[doc["kind"] for doc in docs].index("Deployment")]["spec"]["template"]["spec"]
    # The restricted Pod Security level, as the deployer's dry run checks it on a cluster.
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in pod["containers"] + pod.get("initContainers", []):
        assert container["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        }, container["name"]


async def test_the_echo_example_prints_its_message_exactly(helm_bin: Path, charts: Path) -> None:
    rendered = await render(helm_bin, await built(helm_bin, charts, "echo"))
    definition = json.loads(rendered["ConfigMap"]["data"]["pipeline.json"])
    assert definition == {
        "pipeline": [{"executor": "echo", "commands": ["printf '%s' {{message}}"]}]
    }


async def test_a_two_executor_pipeline_renders_both_executors_the_volume_and_the_configmap(
    helm_bin: Path, charts: Path
) -> None:
    rendered = await render(helm_bin, await built(helm_bin, charts, "bare"), TWO_EXECUTORS)
    definition = json.loads(rendered["ConfigMap"]["data"]["pipeline.json"])
    assert definition == {"pipeline": TWO_EXECUTORS["pipeline"]}
    final = await render(
        helm_bin,
        await built(helm_bin, charts, "bare"),
        {**TWO_EXECUTORS, "non_retryable_exit_codes": [2, 64]},
    )
    listed = json.loads(final["ConfigMap"]["data"]["pipeline.json"])
    assert listed == {"pipeline": TWO_EXECUTORS["pipeline"], "non_retryable_exit_codes": [2, 64]}
    assert parse_definition(json.dumps(listed), source="rendered", as_json=True)
    pod = rendered["Deployment"]["spec"]["template"]["spec"]
    containers = containers_by_name(pod)
    assert set(containers) == {"agent", "executor-fetch", "executor-count-words"}
    fetch, count = containers["executor-fetch"], containers["executor-count-words"]
    assert fetch["image"] == "example/wsched-wget:1.2"
    assert fetch["command"] == ["wsched", "executor", "--listen", f"unix://{PIPE}/fetch.sock"]
    assert count["command"][-1] == f"unix://{PIPE}/count_words.sock"
    assert count["image"] == containers["agent"]["image"]  # no image of its own
    assert count["resources"] == {"limits": {"memory": "64Mi"}}
    assert {"name": "pipe", "emptyDir": {}} in pod["volumes"]
    for container in containers.values():
        assert {"name": "pipe", "mountPath": PIPE} in container["volumeMounts"]
    assert pod["securityContext"]["fsGroup"] == 10001


async def test_the_agent_is_configured_for_its_pipeline(helm_bin: Path, charts: Path) -> None:
    rendered = await render(helm_bin, await built(helm_bin, charts, "bare"), TWO_EXECUTORS)
    pod = rendered["Deployment"]["spec"]["template"]["spec"]
    agent = containers_by_name(pod)["agent"]
    assert agent["command"] == ["wsched", "worker"]
    env = env_of(agent)
    assert env["WSCHED_WORKER_SCHEDULER"] == "wsched-scheduler.wsched:50051"
    assert env["WSCHED_WORKER_PIPELINE_ID"] == "0193-two"
    assert env["WSCHED_WORKER_EXECUTORS"] == (
        f"count_words=unix://{PIPE}/count_words.sock,fetch=unix://{PIPE}/fetch.sock"
    )
    assert env["WSCHED_WORKER_WORKDIR"] == PIPE
    assert env["WSCHED_WORKER_DEFINITION"] == "/etc/wsched/pipeline.json"
    secret = rendered["Secret"]
    assert env["WSCHED_WORKER_TOKEN"] == {
        "secretKeyRef": {"name": secret["metadata"]["name"], "key": "token"}
    }
    assert base64.b64decode(secret["data"]["token"]) == b"wst_secret"
    grace = int(env["WSCHED_WORKER_GRACE_S"])
    assert pod["terminationGracePeriodSeconds"] > grace
    executor_grace = env_of(containers_by_name(pod)["executor-fetch"])
    assert int(executor_grace["WSCHED_WORKER_EXECUTOR_GRACE_S"]) >= grace + 10
    probe = agent["readinessProbe"]["exec"]["command"]
    assert "test -S /mnt/pipe/fetch.sock" in probe[-1]


async def test_executors_can_run_as_native_sidecars(helm_bin: Path, charts: Path) -> None:
    values = {**TWO_EXECUTORS, "nativeSidecars": True}
    rendered = await render(helm_bin, await built(helm_bin, charts, "bare"), values)
    pod = rendered["Deployment"]["spec"]["template"]["spec"]
    assert set(containers_by_name(pod)) == {"agent"}
    sidecars = containers_by_name(pod, "initContainers")
    assert set(sidecars) == {"executor-fetch", "executor-count-words"}
    for sidecar in sidecars.values():
        assert sidecar["restartPolicy"] == "Always"
        assert env_of(sidecar)["WSCHED_WORKER_EXECUTOR_GRACE_S"] == "0"  # stopped after the agent


async def test_keda_scaling_is_optional(helm_bin: Path, charts: Path) -> None:
    values = {**TWO_EXECUTORS, "scaling": {"min_replicas": 0, "keda": {"enabled": True}}}
    rendered = await render(helm_bin, await built(helm_bin, charts, "bare"), values)
    scaled = rendered["ScaledObject"]["spec"]
    assert scaled["scaleTargetRef"]["name"] == rendered["Deployment"]["metadata"]["name"]
    assert scaled["minReplicaCount"] == 0  # scale to zero
    query = scaled["triggers"][0]["metadata"]["query"]
    assert 'server_scheduler_queue_length{worker="demo",namespace="pipelines"}' in query
    assert "replicas" not in rendered["Deployment"]["spec"]  # KEDA owns the count


async def test_an_executor_missing_from_the_values_fails_the_render_clearly(
    helm_bin: Path, charts: Path
) -> None:
    values = {**TWO_EXECUTORS, "executors": {"fetch": {}}}
    with pytest.raises(pyhelm3.errors.Error) as info:
        await render(helm_bin, await built(helm_bin, charts, "bare"), values)
    assert 'values.pipeline names executor "count_words"' in str(info.value)


@pytest.mark.parametrize(
    ("chart", "values"),
    [
        ("ocr", {"pipelineId": "0193-ocr", "workerToken": {"value": "wst_x"}}),
        ("bare", TWO_EXECUTORS),
        ("bare", {**TWO_EXECUTORS, "nativeSidecars": True}),
    ],
    ids=["ocr", "two-executors", "native-sidecars"],
)
async def test_the_rendered_objects_are_valid_for_the_kube_apiserver(
    helm_bin: Path,
    charts: Path,
    kube_cluster: KubeCluster,
    kube_namespace: str,
    chart: str,
    values: dict[str, Any],
) -> None:
    rendered = await render(helm_bin, await built(helm_bin, charts, chart), values)
    # The client's models refuse unknown fields; the server validates the rest (dry run:
    # nothing is stored; Strict: unknown or duplicate fields are errors too).
    config_map = k8s.V1ConfigMap.model_validate(rendered["ConfigMap"])
    secret = k8s.V1Secret.model_validate(rendered["Secret"])
    deployment = k8s.V1Deployment.model_validate(rendered["Deployment"])
    with kube_cluster.api_client() as api:
        core, apps = k8s.CoreV1Api(api), k8s.AppsV1Api(api)
        core.create_namespaced_config_map(
            kube_namespace, config_map, dry_run="All", field_validation="Strict"
        )
        core.create_namespaced_secret(
            kube_namespace, secret, dry_run="All", field_validation="Strict"
        )
        apps.create_namespaced_deployment(
            kube_namespace, deployment, dry_run="All", field_validation="Strict"
        )


async def test_every_worker_container_is_a_real_wsched_command_with_real_settings(
    helm_bin: Path, charts: Path
) -> None:
    rendered = await render(helm_bin, await built(helm_bin, charts, "bare"), TWO_EXECUTORS)
    pod = rendered["Deployment"]["spec"]["template"]["spec"]
    for name, container in containers_by_name(pod).items():
        command = container["command"]
        assert command[0] == "wsched", name
        check_command(command[1:], name)
        literal = {e["name"]: e["value"] for e in container["env"] if "value" in e}
        check_settings(literal, name)

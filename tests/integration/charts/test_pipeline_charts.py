"""The pipeline charts with the real helm: lint, template, and the base chart's objects.

Each test copies ``charts/`` to its own directory and runs ``helm dependency build``
there (the examples use the library through ``file://../../pipeline-lib``), so that no
generated archive lands in the repository.
"""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path
from typing import Any

import pyhelm3
import pytest
from kubernetes import client as k8s

from services.infra.kube import KubeCluster

pytestmark = pytest.mark.integration

CHARTS = Path(__file__).resolve().parents[3] / "charts"
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


@pytest.fixture
def charts(tmp_path: Path, helm_bin: Path) -> Path:
    """A copy of ``charts/``, plus ``examples/bare``: the base chart with no values of its
    own (the examples' values would merge into the tests')."""
    copy = tmp_path / "charts"
    shutil.copytree(CHARTS, copy, ignore=shutil.ignore_patterns("*.tgz", "Chart.lock"))
    bare = copy / "examples" / "bare"
    (bare / "templates").mkdir(parents=True)
    (bare / "Chart.yaml").write_text(
        "apiVersion: v2\nname: bare\nversion: 0.1.0\ndependencies:\n"
        "  - name: pipeline-lib\n    version: 0.1.0\n    repository: file://../../pipeline-lib\n"
    )
    shutil.copy(copy / "examples" / "echo" / "templates" / "pipeline.yaml", bare / "templates")
    return copy


async def helm(helm_bin: Path, *args: str) -> str:
    # pyhelm3's Command raises on a non-zero exit, with helm's stderr.
    output: bytes = await pyhelm3.Command(executable=str(helm_bin)).run(list(args))
    return output.decode()


async def built(helm_bin: Path, charts: Path, example: str) -> Path:
    chart = charts / "examples" / example
    await helm(helm_bin, "dependency", "build", str(chart))
    return chart


async def render(
    helm_bin: Path, chart: Path, values: dict[str, Any] | None = None
) -> dict[str, dict[str, Any]]:
    client = pyhelm3.Client(executable=str(helm_bin))
    loaded = await client.get_chart(chart)
    docs = await client.template_resources(loaded, "demo", values or {}, namespace="pipelines")
    return {doc["kind"]: doc for doc in docs if doc}


def containers_by_name(pod: dict[str, Any], key: str = "containers") -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in pod.get(key, [])}


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


async def test_every_chart_passes_strict_lint(helm_bin: Path, charts: Path) -> None:
    paths = [str(charts / "pipeline-lib")]
    for example in EXAMPLES:
        paths.append(str(await built(helm_bin, charts, example)))
    output = await helm(helm_bin, "lint", "--strict", *paths)
    assert f"{len(paths)} chart(s) linted, 0 chart(s) failed" in output


@pytest.mark.parametrize("example", EXAMPLES)
async def test_every_example_renders_with_its_defaults(
    helm_bin: Path, charts: Path, example: str
) -> None:
    rendered = await render(helm_bin, await built(helm_bin, charts, example))
    assert set(rendered) == {"ConfigMap", "Secret", "Deployment"}  # no KEDA by default
    definition = json.loads(rendered["ConfigMap"]["data"]["pipeline.json"])
    assert definition["pipeline"], definition


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
    assert '"0193-two"' in scaled["triggers"][0]["metadata"]["query"]
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

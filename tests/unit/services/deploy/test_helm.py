"""The Helm deployer's pure parts: where a chart comes from, the values it injects, and
the fingerprint that tells a current release from a stale one."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from pyhelm3 import errors as helm_errors

from services.api.app import workers_observability
from services.deploy.helm import (
    ChartAllowList,
    ChartSource,
    HelmDeployer,
    HelmOptions,
    HelmUnavailable,
    PipelineNames,
    WorkerObservability,
    chart_source,
    names_from_store,
)
from services.deploy.helm._errors import classified
from services.deploy.helm._values import fingerprint, image_values
from services.deploy.ports import DeployFailed
from services.settings import Settings
from services.store.control import ControlStore
from tests.unit.services.deploy.conftest import ECHO, REPO, new_pipeline


def test_chart_references() -> None:
    assert chart_source("oci://ghcr.io/acme/charts/ocr", "1.2.0", base_dir=REPO) == ChartSource(
        ref="oci://ghcr.io/acme/charts/ocr", version="1.2.0"
    )
    assert chart_source(
        "https://charts.example.com/stable/echo", "0.1.0", base_dir=REPO
    ) == ChartSource(ref="echo", repo="https://charts.example.com/stable", version="0.1.0")
    # An archive URL is installed as it is; its version is in its name.
    assert chart_source(
        "https://charts.example.com/echo-0.1.0.tgz", "9.9.9", base_dir=REPO
    ) == ChartSource(ref="https://charts.example.com/echo-0.1.0.tgz")
    local = chart_source("charts/examples/echo", None, base_dir=REPO)
    assert (local.ref, local.directory) == (str(ECHO), True)


@pytest.mark.parametrize(
    ("chart", "message"),
    [
        ("https://charts.example.com", "chart repository URL followed by the chart's name"),
        ("charts/none", "neither a local chart"),
        ("charts", "is not a Helm chart (it has no Chart.yaml)"),
    ],
)
def test_bad_chart_references_are_refused_clearly(chart: str, message: str) -> None:
    with pytest.raises(DeployFailed, match=message.replace("(", r"\(").replace(")", r"\)")):
        chart_source(chart, None, base_dir=REPO)


def test_image_references() -> None:
    assert image_values("registry.example:5000/team/wsched:1.2") == {
        "repository": "registry.example:5000/team/wsched",
        "tag": "1.2",
    }
    # A registry's port is not a tag.
    assert image_values("registry.example:5000/team/wsched") == {
        "repository": "registry.example:5000/team/wsched"
    }


def test_the_fingerprint_follows_chart_values_and_token_without_showing_the_token() -> None:
    source = ChartSource(ref="/charts/echo", directory=True, digest="abc")
    values = {"agent": {"concurrency": 2}, "workerToken": {"value": "wst_secret"}}
    first = fingerprint(source, values)
    assert first == fingerprint(ChartSource(ref="/elsewhere", directory=True, digest="abc"), values)
    assert first != fingerprint(
        ChartSource(ref="/charts/echo", directory=True, digest="abd"), values
    )
    assert first != fingerprint(source, {**values, "agent": {"concurrency": 3}})
    assert first != fingerprint(source, {**values, "workerToken": {"value": "wst_other"}})
    assert "wst_secret" not in first


def deployer(
    tmp_path: Path,
    *,
    worker_image: str | None = None,
    autoscaler: str = "none",
    observability: WorkerObservability | None = None,
) -> HelmDeployer:
    return HelmDeployer(
        options=HelmOptions(
            scheduler="sched:50051",
            base_dir=REPO,
            charts=ChartAllowList(roots=[REPO / "charts"], repositories=[], base_dir=REPO),
            work_dir=tmp_path,
            worker_image=worker_image,
            autoscaler=autoscaler,
            observability=observability,
        ),
        token_of=lambda _: "wst_token",
        names_of=lambda _: PipelineNames(tenant="t", application="a", pipeline="p"),
    )


def test_injected_values_win_and_the_operators_image_is_only_a_default(
    store: ControlStore, tmp_path: Path
) -> None:
    pipeline, _ = new_pipeline(
        store,
        values={
            "pipelineId": "forged",
            "scheduler": {"address": "evil:1"},
            "executors": {"echo": {}},
        },
        scaling={"min_replicas": 0, "max_replicas": 4},
    )
    values = deployer(tmp_path, worker_image="mirror/wsched:1", autoscaler="builtin")._values(
        pipeline, "wst_token"
    )
    assert values["pipelineId"] == pipeline.id
    assert values["scheduler"] == {"address": "sched:50051"}
    assert values["workerToken"] == {"value": "wst_token"}
    assert values["image"] == {"repository": "mirror/wsched", "tag": "1"}
    assert values["scaling"] == {"min_replicas": 0, "max_replicas": 4, "autoscaler": "builtin"}
    own_image = dataclasses.replace(pipeline, values={"image": {"tag": "2"}})
    values = deployer(tmp_path, worker_image="mirror/wsched:1")._values(own_image, "t")
    assert values["image"] == {"repository": "mirror/wsched", "tag": "2"}


def test_the_operators_observability_is_injected_only_when_passed_on(
    store: ControlStore, tmp_path: Path
) -> None:
    own = {"otlp_endpoint": "http://tenants-own:4317"}
    pipeline, _ = new_pipeline(store, values={"observability": own, "executors": {"echo": {}}})
    assert deployer(tmp_path)._values(pipeline, "t")["observability"] == own
    passed_on = WorkerObservability(otlp_endpoint="http://collector:4317", log_format="json")
    values = deployer(tmp_path, observability=passed_on)._values(pipeline, "t")
    assert values["observability"] == {
        "otlp_endpoint": "http://collector:4317",
        "log_format": "json",
    }
    logs_only = WorkerObservability(otlp_endpoint=None, log_format="json")
    values = deployer(tmp_path, observability=logs_only)._values(pipeline, "t")
    # The operator's word replaces a pipeline's own: no endpoint means no spans.
    assert values["observability"] == {"otlp_endpoint": "", "log_format": "json"}


def test_the_api_passes_its_own_observability_on_when_the_operator_says_so() -> None:
    traced = {"otlp_endpoint": "http://collector:4317", "log_format": "json"}
    assert workers_observability(Settings(**traced)) is None  # type: ignore[arg-type]
    told = Settings(**traced, workers_observability=True)  # type: ignore[arg-type]
    assert workers_observability(told) == WorkerObservability(
        otlp_endpoint="http://collector:4317", log_format="json"
    )
    assert workers_observability(Settings(workers_observability=True)) == WorkerObservability(
        otlp_endpoint=None, log_format="text"
    )


def test_names_come_from_the_store(store: ControlStore) -> None:
    pipeline, _ = new_pipeline(store, "echo")
    names = names_from_store(store.pipeline_names)(pipeline.id)
    assert names == PipelineNames(tenant="t-echo", application="a", pipeline="echo")
    assert (names.release, names.namespace) == ("t-echo-a-echo", "wsched-t-echo")
    assert names_from_store(store.pipeline_names)("missing") is None


def test_a_missing_helm_is_named_with_its_setting(tmp_path: Path) -> None:
    missing = HelmDeployer(
        options=HelmOptions(
            scheduler="s:1",
            base_dir=REPO,
            charts=ChartAllowList(roots=[], repositories=[], base_dir=REPO),
            work_dir=tmp_path,
            executable=str(tmp_path / "helm"),
        ),
        token_of=lambda _: "t",
        names_of=lambda _: None,
    )
    with pytest.raises(HelmUnavailable, match="set WSCHED_HELM_EXECUTABLE"):
        missing._helm("wsched-t")


def test_a_post_renderer_refusal_is_shown_without_helms_wrapping() -> None:
    stderr = (
        b"Error: error while running post render on files: error while running command "
        b"/opt/venv/bin/python3. error output:\n"
        b"wsched-post-render: Namespace 'x' is cluster-scoped: a pipeline chart may only ...\n"
        b"wsched-post-render: ConfigMap 'y' is in namespace 'kube-system'\n: exit status 1"
    )
    err = helm_errors.Error(1, b"", stderr)
    message = str(classified(err, "helm upgrade --install r"))
    assert message.startswith(
        "helm upgrade --install r: the chart renders what a pipeline may not create: "
        "Namespace 'x' is cluster-scoped"
    )
    assert "ConfigMap 'y' is in namespace 'kube-system'" in message
    assert "/opt" not in message and "exit status" not in message

"""Reading a pipeline chart's values without Helm: what the local deployer runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from services.deploy.charts import (
    ChartError,
    WorkerSpec,
    chart_values,
    merge_values,
    resolve_local_chart,
)

REPO = Path(__file__).resolve().parents[4]
ECHO = REPO / "charts" / "examples" / "echo"
OCR = REPO / "charts" / "examples" / "ocr"


def test_a_relative_chart_path_is_resolved_against_the_base_dir() -> None:
    assert resolve_local_chart("charts/examples/echo", base_dir=REPO) == ECHO
    assert resolve_local_chart(f"file://{ECHO}", base_dir=Path("/")) == ECHO


@pytest.mark.parametrize("chart", ["oci://registry.example/charts/echo", "https://x/echo", "echo"])
def test_a_chart_that_is_not_a_local_directory_is_refused_clearly(chart: str) -> None:
    with pytest.raises(ChartError) as info:
        resolve_local_chart(chart, base_dir=REPO)
    message = str(info.value)
    assert "is not a local directory" in message
    assert "charts/examples/echo" in message  # what to give instead
    assert str(REPO) not in message  # the tenant reads it: no path of this machine


def test_a_directory_without_chart_yaml_is_not_a_chart(tmp_path: Path) -> None:
    with pytest.raises(ChartError, match=r"no Chart\.yaml"):
        resolve_local_chart(str(tmp_path), base_dir=REPO)


def test_values_merge_as_helm_merges_them() -> None:
    base = {"agent": {"concurrency": 4, "grace_s": 30}, "pipeline": [1, 2], "keep": "me"}
    override = {"agent": {"concurrency": 8}, "pipeline": [3], "keep": None, "new": {"a": 1}}
    assert merge_values(base, override) == {
        "agent": {"concurrency": 8, "grace_s": 30},
        "pipeline": [3],
        "new": {"a": 1},
    }
    assert base["agent"] == {"concurrency": 4, "grace_s": 30}  # not modified


def test_the_echo_example_prints_the_message_exactly() -> None:
    spec = WorkerSpec.from_values(chart_values(ECHO))
    assert spec.definition == {
        "pipeline": [{"executor": "echo", "commands": ["printf '%s' {{message}}"]}]
    }
    assert spec.executors == ("echo",)
    assert (spec.replicas, spec.concurrency) == (1, 4)
    final = WorkerSpec.from_values(chart_values(ECHO, {"non_retryable_exit_codes": [2]}))
    assert final.definition["non_retryable_exit_codes"] == [2]  # as pipeline-lib renders it
    timed = WorkerSpec.from_values(chart_values(ECHO, {"timeout_s": 90}))
    assert timed.definition["timeout_s"] == 90  # as pipeline-lib renders it
    handler = {"pipeline": [{"executor": "echo", "handler": "mypkg.tasks:resize"}]}
    python = WorkerSpec.from_values(chart_values(ECHO, handler))
    assert python.definition["pipeline"] == [{"executor": "echo", "handler": "mypkg.tasks:resize"}]


def test_the_ocr_example_runs_wget_then_tesseract() -> None:
    spec = WorkerSpec.from_values(chart_values(OCR))
    assert [step["executor"] for step in spec.definition["pipeline"]] == ["wget", "tesseract"]
    assert spec.executors == ("tesseract", "wget")


def test_the_pipelines_values_and_scaling_override_the_charts() -> None:
    values = chart_values(ECHO, {"agent": {"concurrency": 9}}, {"scaling": {"min_replicas": 0}})
    spec = WorkerSpec.from_values(values)
    assert (spec.concurrency, spec.replicas, spec.task_timeout_s) == (9, 0, 60.0)


ECHO_STEP = {"executor": "echo", "commands": ["echo {{message}}"]}


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"executors": {"echo": {}}}, "values.pipeline must be the pipeline's steps"),
        ({"pipeline": [ECHO_STEP]}, "values.executors does not list"),
        ({"pipeline": [ECHO_STEP], "executors": {"wget": {}}}, "executor(s) echo"),
        (
            {"pipeline": [{"executor": "echo", "commands": ['echo "{{x}}"']}], "executors": {}},
            "double quotes",
        ),
        (
            {"pipeline": [ECHO_STEP], "executors": {"echo": {}}, "scaling": {"min_replicas": 1.5}},
            "scaling.min_replicas must be a whole number",
        ),
        (
            {"pipeline": [ECHO_STEP], "executors": {"echo": {}}, "scaling": {"min_replicas": 500}},
            "scaling.min_replicas must be between 0 and 32",
        ),
        (
            {"pipeline": [ECHO_STEP], "executors": {"echo": {}}, "agent": {"concurrency": "x"}},
            "agent.concurrency must be a number",
        ),
        (
            {"pipeline": [ECHO_STEP], "executors": {"echo": {}, "../x": {}}},
            "not a valid executor name",
        ),
    ],
)
def test_bad_values_say_what_is_wrong(values: dict[str, Any], expected: str) -> None:
    with pytest.raises(ChartError) as info:
        WorkerSpec.from_values(values)
    assert expected in str(info.value)

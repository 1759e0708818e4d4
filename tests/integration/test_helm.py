"""helm renders and lints our test chart: the real binary, no cluster needed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyhelm3
import pytest

pytestmark = pytest.mark.integration

CHART = Path(__file__).parents[1] / "data" / "charts" / "hello"


async def test_template_renders_deployment_from_values(helm_bin: Path) -> None:
    client = pyhelm3.Client(executable=str(helm_bin))
    chart = await client.get_chart(CHART)
    values = {"replicaCount": 3, "image": {"tag": "3.9"}}

    rendered: list[dict[str, Any]] = [
        doc
        for doc in await client.template_resources(chart, "demo", values, namespace="ns1")
        if doc
    ]

    assert [doc["kind"] for doc in rendered] == ["Deployment"]
    deployment = rendered[0]
    assert deployment["metadata"]["name"] == "demo-hello"
    assert deployment["spec"]["replicas"] == 3
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "registry.k8s.io/pause:3.9"


async def test_template_uses_chart_defaults(helm_bin: Path) -> None:
    client = pyhelm3.Client(executable=str(helm_bin))
    chart = await client.get_chart(CHART)

    (deployment,) = [doc for doc in await client.template_resources(chart, "x") if doc]

    assert deployment["spec"]["replicas"] == 1
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "registry.k8s.io/pause:3.10"


async def test_chart_passes_strict_lint(helm_bin: Path) -> None:
    # pyhelm3 has no lint wrapper; its Command raises on a non-zero exit.
    command = pyhelm3.Command(executable=str(helm_bin))

    output = (await command.run(["lint", "--strict", str(CHART)])).decode()

    assert "1 chart(s) linted, 0 chart(s) failed" in output

"""The real helm on our charts: commands, rendering, and the charts under ``charts/``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyhelm3
import yaml

CHARTS = Path(__file__).resolve().parents[3] / "charts"


def discover_charts(root: Path = CHARTS) -> list[Path]:
    """Every chart under ``root`` (a directory with a Chart.yaml), as paths relative to it."""
    return sorted(path.parent.relative_to(root) for path in root.rglob("Chart.yaml"))


def chart_metadata(chart: Path) -> dict[str, Any]:
    metadata: dict[str, Any] = yaml.safe_load((chart / "Chart.yaml").read_text())
    return metadata


def ci_values_files(chart: Path) -> list[Path]:
    """The chart's ``ci/*-values.yaml`` (chart-testing's convention): values to check it with."""
    return sorted((chart / "ci").glob("*-values.yaml"))


def load_yaml(path: Path) -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load(path.read_text()) or {}
    return values


def merged(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` deep-merged onto ``base`` as helm merges ``--values``: maps key by key,
    anything else (lists too) replaced."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


async def helm(helm_bin: Path, *args: str) -> str:
    # pyhelm3's Command raises on a non-zero exit, with helm's stderr.
    output: bytes = await pyhelm3.Command(executable=str(helm_bin)).run(list(args))
    return output.decode()


async def with_dependencies(helm_bin: Path, chart: Path) -> Path:
    """``chart``, its dependencies built if it has any: in place, so pass a copy (the
    examples use the library through ``file://``, and no archive belongs in the repo)."""
    if chart_metadata(chart).get("dependencies"):
        await helm(helm_bin, "dependency", "build", str(chart))
    return chart


async def built(helm_bin: Path, charts: Path, example: str) -> Path:
    """The example pipeline chart ``example`` of the copy ``charts``, ready to render."""
    return await with_dependencies(helm_bin, charts / "examples" / example)


async def render_all(
    helm_bin: Path,
    chart: Path,
    values: dict[str, Any] | None = None,
    *,
    release: str = "demo",
    namespace: str = "pipelines",
) -> list[dict[str, Any]]:
    """Every object ``helm template`` renders, hooks included."""
    client = pyhelm3.Client(executable=str(helm_bin))
    loaded = await client.get_chart(chart)
    docs = await client.template_resources(loaded, release, values or {}, namespace=namespace)
    return [doc for doc in docs if doc]


async def render(
    helm_bin: Path,
    chart: Path,
    values: dict[str, Any] | None = None,
    *,
    release: str = "demo",
    namespace: str = "pipelines",
) -> dict[str, dict[str, Any]]:
    """The rendered objects by kind: for charts with one object of each kind."""
    docs = await render_all(helm_bin, chart, values, release=release, namespace=namespace)
    return {doc["kind"]: doc for doc in docs}

"""Where helm takes a pipeline's chart from: a local directory or archive, an ``oci://``
reference, an archive URL or a chart in a chart repository (see :mod:`services.deploy.helm`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from services.deploy.charts import local_chart_path
from services.deploy.ports import DeployFailed


@dataclass(frozen=True, kw_only=True)
class ChartSource:
    """Where helm takes a chart from: ``ref`` (a path, an archive URL, an ``oci://``
    reference or a name in ``repo``) and the version asked for."""

    ref: str
    repo: str | None = None
    version: str | None = None
    #: A local chart directory (not an archive, not a URL).
    directory: bool = False
    #: A local directory's content digest, so that an edited chart counts as a change.
    digest: str = ""


def chart_source(chart: str, version: str | None, *, base_dir: Path) -> ChartSource:
    """Where a pipeline's ``chart`` points (see the module's docstring)."""
    if chart.startswith("oci://"):
        return ChartSource(ref=chart, version=version)
    if chart.startswith(("https://", "http://")):
        if chart.endswith((".tgz", ".tar.gz")):
            return ChartSource(ref=chart)
        repo, _, name = chart.rstrip("/").rpartition("/")
        if not name or repo.endswith(":/"):
            raise DeployFailed(
                f"chart {chart!r}: give a chart repository URL followed by the chart's "
                "name, e.g. https://charts.example.com/stable/echo"
            )
        return ChartSource(ref=name, repo=repo, version=version)
    path = local_chart_path(chart, base_dir=base_dir)
    if path.is_dir():
        if not (path / "Chart.yaml").is_file():
            raise DeployFailed(f"chart {chart!r} is not a Helm chart (it has no Chart.yaml)")
        return ChartSource(ref=str(path), version=version, directory=True)
    if path.is_file():
        return ChartSource(ref=str(path))
    # The tenant reads this: the chart as given, never where this machine looked.
    raise DeployFailed(
        f"chart {chart!r} is neither a local chart (relative paths are taken from the API's "
        "chart directory), an oci:// reference nor an http(s) URL"
    )

"""Which charts a tenant may name: the operator's allow-list of chart sources.

Helm runs on the API's machine, so a chart given as a path could read any file the API
can (``/etc``, ``../../tmp``), and a URL could make the API fetch from any address it
can reach. The operator therefore lists what may be used:

- local chart roots (``WSCHED_CHART_ROOTS``): a local chart must lie inside one of them,
  compared by real path, so ``..`` and symbolic links cannot step outside;
- repositories and registries (``WSCHED_CHART_REPOSITORIES``): an ``https://`` chart
  repository or archive location, or an ``oci://`` registry path, matched on the exact
  scheme, host and port and on whole path segments (``https://h/stable`` allows
  ``https://h/stable/echo``, never ``https://h/stable-x/echo``).

A local chart's dependencies are checked the same way, and so are the symbolic links in
its tree. Refusals name the chart as the tenant gave it and the setting to change, never
a path of the API's machine.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

from services.deploy.chart_urls import URL_SCHEMES, parse_location
from services.deploy.charts import local_chart_path
from services.deploy.ports import DeployFailed

ROOTS_SETTING = "WSCHED_CHART_ROOTS"
REPOSITORIES_SETTING = "WSCHED_CHART_REPOSITORIES"
#: Nested ``file://`` dependencies deeper than this are a loop or a trick.
_MAX_DEPTH = 8


class ChartNotAllowed(DeployFailed):
    """The chart, or one of its dependencies, is outside the operator's allow-list."""


class ChartAllowList:
    """The operator's chart sources; :meth:`check` refuses any other chart."""

    def __init__(self, *, roots: Iterable[Path], repositories: Iterable[str], base_dir: Path):
        """``roots`` relative to ``base_dir`` (where relative chart paths are taken from)
        are resolved once, here, to their real paths."""
        self._base_dir = base_dir
        self._roots = tuple(
            (root if root.is_absolute() else base_dir / root).resolve() for root in roots
        )
        self._repositories = tuple(parse_location(url) for url in repositories)

    @property
    def roots(self) -> tuple[Path, ...]:
        return self._roots

    def check(self, chart: str) -> None:
        """Raise :class:`ChartNotAllowed` unless ``chart`` (and, for a local chart
        directory, each of its dependencies and links) is allowed. Blocking (it reads
        the chart's files): call it in a thread."""
        if _is_url(chart):
            self._check_url(chart, chart, what="")
            return
        if "://" in chart.removeprefix("file://"):
            raise ChartNotAllowed(
                f"chart {chart!r}: give a local chart path, an https:// chart repository URL "
                "or an oci:// reference"
            )
        path = local_chart_path(chart, base_dir=self._base_dir)
        real = path.resolve()
        if not self.path_allowed(real):
            raise ChartNotAllowed(
                f"chart {chart!r} is not in a chart directory the operator allows "
                f"({ROOTS_SETTING}); use one of the bundled example charts, or an allowed "
                f"repository or registry ({REPOSITORIES_SETTING})"
            )
        if real.is_dir():
            self._check_tree(chart, real, depth=0)

    def path_allowed(self, real: Path) -> bool:
        return any(real == root or real.is_relative_to(root) for root in self._roots)

    def url_allowed(self, url: str) -> bool:
        try:
            location = parse_location(url)
        except ValueError:
            return False
        return any(location.within(allowed) for allowed in self._repositories)

    def _check_url(self, chart: str, url: str, *, what: str) -> None:
        """``what`` names a dependency's URL; empty, the URL is the chart itself."""
        subject = f"chart {chart!r}: {what} {url!r}" if what else f"chart {chart!r}"
        try:
            parse_location(url)
        except ValueError as err:
            raise ChartNotAllowed(f"{subject}: {err}") from None
        if not self.url_allowed(url):
            raise ChartNotAllowed(
                f"{subject} is not in a chart repository or registry the operator allows "
                f"({REPOSITORIES_SETTING})"
            )

    def _check_tree(self, chart: str, directory: Path, *, depth: int) -> None:
        """The links inside a local chart, then its dependencies, recursively."""
        if depth > _MAX_DEPTH:
            raise ChartNotAllowed(f"chart {chart!r}: its file:// dependencies nest too deep")
        for link in _links(directory):
            if not self.path_allowed(link.resolve()):
                raise ChartNotAllowed(
                    f"chart {chart!r}: {link.relative_to(directory)} links outside the chart "
                    f"directories the operator allows ({ROOTS_SETTING})"
                )
        for dependency in _dependencies(chart, directory):
            self._check_dependency(chart, directory, dependency, depth=depth)

    def _check_dependency(
        self, chart: str, directory: Path, dependency: dict[str, Any], *, depth: int
    ) -> None:
        name = str(dependency.get("name", "?"))
        repository = str(dependency.get("repository") or "")
        what = f"dependency {name!r} from"
        if not repository:
            return  # vendored in the chart's own charts/ directory, checked as its tree
        if repository.startswith("file://"):
            location = Path(repository.removeprefix("file://"))
            real = (location if location.is_absolute() else directory / location).resolve()
            if not self.path_allowed(real):
                raise ChartNotAllowed(
                    f"chart {chart!r}: {what} {repository!r} is not in a chart directory "
                    f"the operator allows ({ROOTS_SETTING})"
                )
            if real.is_dir():
                self._check_tree(chart, real, depth=depth + 1)
            return
        if not _is_url(repository):
            raise ChartNotAllowed(
                f"chart {chart!r}: {what} {repository!r}: name a dependency's repository by "
                "its URL, not a repository alias"
            )
        self._check_url(chart, repository, what=what)


def _is_url(chart: str) -> bool:
    return chart.startswith(tuple(f"{scheme}://" for scheme in URL_SCHEMES))


def _links(directory: Path) -> Iterator[Path]:
    for top, dirs, files in os.walk(directory, followlinks=False):
        for name in (*dirs, *files):
            path = Path(top) / name
            if path.is_symlink():
                yield path


def _dependencies(chart: str, directory: Path) -> list[dict[str, Any]]:
    try:
        meta = yaml.safe_load((directory / "Chart.yaml").read_text())
    except FileNotFoundError:
        return []
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        raise ChartNotAllowed(f"chart {chart!r}: its Chart.yaml cannot be read") from None
    found = meta.get("dependencies") if isinstance(meta, dict) else None
    return [d for d in found or [] if isinstance(d, dict)]

"""Fixtures of the chart tests: a copy of ``charts/`` to build dependencies in."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.integration.charts.rendering import CHARTS


@pytest.fixture
def charts(tmp_path: Path) -> Path:
    """A copy of ``charts/``, plus ``examples/bare``: the base chart with no values of its
    own (the examples' values would merge into the tests').

    Tests run ``helm dependency build`` in the copy, so that no generated archive lands
    in the repository.
    """
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

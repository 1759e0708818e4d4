"""The README's Python SDK example, run as a newcomer would: `wsched dev`, then the
script, from the repository root; and the README shows the script as it is."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.test_dev_walkthrough import REPO, _env, wsched_dev

pytestmark = pytest.mark.integration

EXAMPLE = REPO / "sdk" / "examples" / "quickstart.py"


def test_the_readme_shows_the_example_verbatim() -> None:
    readme = (REPO / "README.md").read_text()
    assert f"```python\n{EXAMPLE.read_text()}```" in readme


def test_the_sdk_example_runs_against_wsched_dev(tmp_path: Path) -> None:
    with wsched_dev(tmp_path) as dev:
        done = subprocess.run(
            [sys.executable, str(EXAMPLE)],
            cwd=REPO,
            env=_env(dev),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["hello", "100 queued", "scheduled", "task_conflict"]

"""What ``pip install`` puts on a user's machine: the wheels' top-level names.

The SDK's wheel (``wsched``, from sdk/) must hold the one package ``wsched``, so that it
can never shadow or be shadowed by an application's own ``services`` or ``protos``; the
server's wheel (``workload-scheduler``, from the root) holds the repository's packages and
depends on the SDK. Both are built here from the checkout, without a network: the build
backend (hatchling) is a dev dependency.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def build_wheel(project: Path, out: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(out), str(project)],
        check=True,
        capture_output=True,
        timeout=240,
    )  # fmt: skip
    (wheel,) = out.glob("*.whl")
    return wheel


def top_level(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        roots = {name.split("/")[0] for name in archive.namelist()}
    return {root for root in roots if not root.endswith((".dist-info", ".data"))}


def metadata(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        message = Parser().parsestr(archive.read(name).decode())
    return message.get_all("Requires-Dist") or []


@pytest.fixture(scope="module")
def sdk_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(REPO / "sdk", tmp_path_factory.mktemp("sdk"))


def test_the_sdk_wheel_installs_one_top_level_package(sdk_wheel: Path) -> None:
    assert sdk_wheel.name.startswith("wsched-")
    assert top_level(sdk_wheel) == {"wsched"}
    with zipfile.ZipFile(sdk_wheel) as archive:
        names = set(archive.namelist())
    assert {"wsched/__init__.py", "wsched/py.typed", "wsched/client/__init__.py"} <= names


def test_the_sdk_depends_on_httpx_and_brings_the_server_only_as_an_extra(
    sdk_wheel: Path,
) -> None:
    requires = metadata(sdk_wheel)
    always = [r for r in requires if "extra ==" not in r]
    assert [r.split(">")[0].split("<")[0] for r in always] == ["httpx"]
    assert "workload-scheduler==0.1.0; extra == 'server'" in requires


def test_the_server_wheel_holds_the_repository_packages_and_needs_the_sdk(
    tmp_path: Path,
) -> None:
    wheel = build_wheel(REPO, tmp_path)
    assert wheel.name.startswith("workload_scheduler-")
    assert top_level(wheel) == {"services", "actors", "protos"}
    assert "wsched==0.1.0" in metadata(wheel)
    # The dashboard's assets ship in the package: users run no build step.
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    static = "services/api/ui/static/"
    assert {f"{static}index.html", f"{static}app.js", f"{static}style.css"} <= names

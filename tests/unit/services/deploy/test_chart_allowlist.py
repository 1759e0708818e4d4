"""The operator's allow-list of chart sources: URLs by scheme, host and whole path
segments; local charts by real path, so ``..`` and symbolic links cannot step out."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from services.deploy.chart_urls import parse_location
from services.deploy.helm import ChartAllowList, ChartNotAllowed

REPOSITORIES = [
    "https://charts.example.com/stable",
    "oci://registry.example.com:5000/team/pipelines",
]


def allow(tmp_path: Path, *roots: str) -> ChartAllowList:
    return ChartAllowList(
        roots=[Path(root) for root in roots] or [Path("allowed")],
        repositories=REPOSITORIES,
        base_dir=tmp_path,
    )


def chart(directory: Path, *, dependencies: str = "") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "Chart.yaml").write_text(
        f"apiVersion: v2\nname: {directory.name}\nversion: 0.1.0\n{dependencies}"
    )
    return directory


@pytest.mark.parametrize(
    "url",
    [
        "https://charts.example.com/stable/echo",
        "https://charts.example.com/stable/echo-1.0.0.tgz",
        "https://CHARTS.example.com/stable/sub/echo",
        "https://charts.example.com//stable/echo",
        "oci://registry.example.com:5000/team/pipelines/echo",
    ],
)
def test_urls_within_an_allowed_repository(tmp_path: Path, url: str) -> None:
    allow(tmp_path).check(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://charts.example.com/stable/echo",  # another scheme
        "oci://charts.example.com/stable/echo",
        "https://charts.example.com.evil.com/stable/echo",  # another host
        "https://evil.com/charts.example.com/stable/echo",
        "https://charts.example.com:8443/stable/echo",  # another port
        "oci://registry.example.com/team/pipelines/echo",
        "https://charts.example.com/stable-evil/echo",  # not a whole segment
        "https://charts.example.com/stab",
        "https://charts.example.com/stable/../private/echo",  # dot segments
        "https://charts.example.com/stable/%2e%2e/private/echo",
        "https://charts.example.com/stable%2f..%2fprivate/echo",  # encoded separator
        "https://charts.example.com@evil.com/stable/echo",  # credentials
        "https://user:pw@charts.example.com/stable/echo",
        "https://charts.example.com/stable/echo?x=1",  # query
        "https://charts.example.com/stable/echo#x",
    ],
)
def test_urls_outside_the_allowed_repositories(tmp_path: Path, url: str) -> None:
    with pytest.raises(ChartNotAllowed, match=r"WSCHED_CHART_REPOSITORIES|not accepted|may not"):
        allow(tmp_path).check(url)


def test_a_repository_setting_must_be_a_plain_location(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="scheme"):
        ChartAllowList(roots=[], repositories=["ftp://x/y"], base_dir=tmp_path)
    assert parse_location("oci://R.example.com/a/b/").segments == ("a", "b")


def test_local_charts_inside_a_root_relative_or_absolute(tmp_path: Path) -> None:
    chart(tmp_path / "allowed" / "echo")
    allowed = allow(tmp_path)
    allowed.check("allowed/echo")
    allowed.check("file://allowed/echo")
    allowed.check(str(tmp_path / "allowed" / "echo"))
    allowed.check("allowed/not-yet-there")  # its absence is the deploy's to report


@pytest.mark.parametrize(
    "given",
    ["..", "../../etc", "/etc", "allowed/../elsewhere", "allowed-not", "elsewhere/echo", "~"],
)
def test_local_charts_outside_every_root(tmp_path: Path, given: str) -> None:
    chart(tmp_path / "allowed" / "echo")
    chart(tmp_path / "elsewhere" / "echo")
    with pytest.raises(ChartNotAllowed, match="WSCHED_CHART_ROOTS") as refused:
        allow(tmp_path).check(given)
    assert str(tmp_path) not in str(refused.value)


def test_a_link_out_of_the_root_is_judged_by_where_it_leads(tmp_path: Path) -> None:
    outside = chart(tmp_path / "elsewhere" / "echo")
    (tmp_path / "allowed").mkdir()
    os.symlink(outside, tmp_path / "allowed" / "link")
    with pytest.raises(ChartNotAllowed, match="WSCHED_CHART_ROOTS"):
        allow(tmp_path).check("allowed/link")
    # A root that is itself a link is compared by its target.
    os.symlink(tmp_path / "elsewhere", tmp_path / "linked-root")
    allow(tmp_path, "linked-root").check("elsewhere/echo")


def test_a_link_inside_a_chart_may_not_lead_out(tmp_path: Path) -> None:
    echo = chart(tmp_path / "allowed" / "echo")
    (echo / "files").mkdir()
    os.symlink("/etc/passwd", echo / "files" / "passwd")
    with pytest.raises(ChartNotAllowed, match="files/passwd links outside"):
        allow(tmp_path).check("allowed/echo")


def test_dependencies_are_checked_the_same_way(tmp_path: Path) -> None:
    chart(tmp_path / "allowed" / "lib")
    chart(tmp_path / "elsewhere" / "lib")
    ok = "dependencies:\n  - {name: lib, version: 0.1.0, repository: file://../lib}\n"
    chart(tmp_path / "allowed" / "good", dependencies=ok)
    allow(tmp_path).check("allowed/good")
    cases = {
        "file://../../elsewhere/lib": "WSCHED_CHART_ROOTS",
        "https://evil.com/charts": "WSCHED_CHART_REPOSITORIES",
        "oci://registry.example.com:5000/team/other": "WSCHED_CHART_REPOSITORIES",
        "@stable": "repository alias",
    }
    for number, (repository, expected) in enumerate(cases.items()):
        line = f"dependencies:\n  - {{name: lib, version: 0.1.0, repository: '{repository}'}}\n"
        chart(tmp_path / "allowed" / f"bad{number}", dependencies=line)
        with pytest.raises(ChartNotAllowed, match=expected) as refused:
            allow(tmp_path).check(f"allowed/bad{number}")
        assert "dependency 'lib'" in str(refused.value)
    fine = "dependencies:\n  - {name: lib, version: 0.1.0, repository: 'https://charts.example.com/stable'}\n"
    chart(tmp_path / "allowed" / "remote", dependencies=fine)
    allow(tmp_path).check("allowed/remote")


def test_a_dependency_of_a_dependency_is_checked_too(tmp_path: Path) -> None:
    chart(tmp_path / "elsewhere" / "deep")
    to_deep = (
        "dependencies:\n  - {name: deep, version: 0.1.0, repository: file://../../elsewhere/deep}\n"
    )
    chart(tmp_path / "allowed" / "lib", dependencies=to_deep)
    to_lib = "dependencies:\n  - {name: lib, version: 0.1.0, repository: file://../lib}\n"
    chart(tmp_path / "allowed" / "top", dependencies=to_lib)
    with pytest.raises(ChartNotAllowed, match="dependency 'deep'"):
        allow(tmp_path).check("allowed/top")


def test_other_schemes_are_refused(tmp_path: Path) -> None:
    for given in ("ftp://x/y", "s3://bucket/chart", "file://https://evil.com/x"):
        with pytest.raises(ChartNotAllowed, match="give a local chart path"):
            allow(tmp_path).check(given)


def test_the_bundled_examples_are_allowed_by_default() -> None:
    repo = Path(__file__).resolve().parents[4]
    allowed = ChartAllowList(
        roots=[Path("charts/examples"), Path("charts/pipeline-lib")],
        repositories=[],
        base_dir=repo,
    )
    for example in ("echo", "ocr"):
        allowed.check(f"charts/examples/{example}")
    with pytest.raises(ChartNotAllowed):
        allowed.check("charts/workload-scheduler")

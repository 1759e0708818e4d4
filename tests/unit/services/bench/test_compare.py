"""The interleaved comparison's bookkeeping: report parsing, ABBA order, medians."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.bench.compare import (
    CompareFailed,
    Side,
    _editables,
    order,
    parse_report,
    run_once,
    summarise,
)

BASE = Side(label="base", command=("base-wsched",), commit="a" * 40)
HEAD = Side(label="this", command=("wsched",), commit="b" * 40)


def test_the_report_is_the_last_json_object_after_progress_lines() -> None:
    report = {"e2e_tasks_per_s": 1234.5, "details": {}}
    stdout = "bench: starting Kafka\nbench: {not json}\n" + json.dumps(report, indent=2)
    assert parse_report(stdout) == report
    assert parse_report(json.dumps(report, indent=2)) == report


def test_a_run_without_a_report_fails_clearly() -> None:
    with pytest.raises(CompareFailed, match="no JSON report"):
        parse_report("bench: starting Kafka\nTraceback ...\n")


def test_rounds_alternate_which_side_goes_first() -> None:
    firsts = [order(n, BASE, HEAD)[0].label for n in range(4)]
    assert firsts == ["base", "this", "base", "this"]
    assert all(set(s.label for s in order(n, BASE, HEAD)) == {"base", "this"} for n in range(4))


def test_medians_and_ratio_per_figure() -> None:
    reports = {
        "base": [{"e2e_tasks_per_s": v} for v in (1000.0, 3000.0, 2000.0)],
        "this": [{"e2e_tasks_per_s": v} for v in (2100.0, 1900.0, 2300.0)],
    }
    summary = summarise(base=BASE, head=HEAD, reports=reports, bench_args=["--tasks", "10"])
    figure = summary["figures"]["e2e_tasks_per_s"]
    assert (figure["base_median"], figure["head_median"]) == (2000.0, 2100.0)
    assert figure["ratio"] == 1.05
    assert summary["runs_each"] == 3
    assert summary["figures"]["submit_p99_ms"]["ratio"] is None  # absent from every run
    assert summary["machine"]["cores"] >= 1


def test_a_base_with_an_sdk_installs_it_from_its_own_tree(tmp_path: Path) -> None:
    """The server depends on the SDK of its version: from the tree, never an index."""
    assert _editables(tmp_path) == ["-e", str(tmp_path)]
    (tmp_path / "sdk").mkdir()
    (tmp_path / "sdk" / "pyproject.toml").write_text("")
    assert _editables(tmp_path) == ["-e", str(tmp_path / "sdk"), "-e", str(tmp_path)]


def test_each_side_runs_in_its_own_checkout(tmp_path: Path) -> None:
    """Run from this checkout, the base's processes (``python -m services...``) would import
    this checkout's code instead of the base's."""
    tree = tmp_path / "base-tree"
    tree.mkdir()
    script = 'printf \'{\\n  "cwd": "%s"\\n}\\n\' "$PWD"'
    side = Side(label="base", command=("sh", "-c", script, "sh"), commit="a" * 40, cwd=tree)
    report = run_once(side, bench_args=[], log=tmp_path / "run.log")
    assert Path(report["cwd"]).resolve() == tree.resolve()

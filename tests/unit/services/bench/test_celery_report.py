"""The Celery comparison's arithmetic: figures from results, CPU per 1,000 tasks, ratios."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from services.bench.celery_report import (
    CeleryBenchFailed,
    done_unix,
    figures,
    parse_ours,
    per_thousand,
    ratios,
    render,
    result_of,
)

CLIENT = {"tasks": 4, "first_submit_unix": 1000.0, "last_submit_unix": 1001.0, "cpu_s": 0.5}


def _setup(e2e: float | None) -> dict[str, object]:
    return {
        "title": "t",
        "config": {"task_acks_late": False, "worker_prefetch_multiplier": 128, "redis": "x"},
        "e2e_tasks_per_s": e2e,
        "cpu_s_per_1000_tasks": {"client": 1.0, "worker": 2.0, "redis": 0.5, "total": 3.5},
    }


def _celery(a: float | None, b: float | None) -> dict[str, object]:
    return {
        "setups": {"a": _setup(a), "b": _setup(b)},
        "workload": {"tasks": 4},
        "machine": {"cores": 2},
        "versions": {"celery": "5.7.0"},
    }


OURS = {
    "e2e_tasks_per_s": 2000.0,
    "details": {
        "throughput": {
            "tasks_succeeded": 10_000,
            "cpu_s": {"scheduler": 20.0, "tidb": 10.0, "wall": 6.0},
        }
    },
}


def test_end_to_end_is_successes_over_first_submit_to_last_result() -> None:
    results = [("SUCCESS", 1001.5), ("SUCCESS", 1003.0), ("SUCCESS", 1002.0), ("SUCCESS", 1000.2)]
    cpu = {"client": 0.5, "worker": 2.0, "redis": 0.25}

    got = figures(tasks=4, client=CLIENT, results=results, cpu_s=cpu)

    assert got["results_succeeded"] == 4
    assert got["e2e_s"] == 3.0
    assert got["e2e_tasks_per_s"] == pytest.approx(4 / 3, abs=0.05)
    assert got["submit_s"] == 1.0 and got["submit_tasks_per_s"] == 4.0
    assert got["cpu_s"] == cpu
    assert got["cpu_s_per_1000_tasks"] == {
        "client": 125.0,
        "worker": 500.0,
        "redis": 62.5,
        "total": 687.5,
    }
    assert json.loads(json.dumps(got)) == got


def test_failures_are_not_counted_and_no_success_gives_no_rate() -> None:
    mixed = figures(
        tasks=2, client=CLIENT, results=[("FAILURE", 1009.0), ("SUCCESS", 1002.0)], cpu_s={}
    )
    assert (mixed["results_succeeded"], mixed["e2e_s"]) == (1, 2.0)

    none = figures(tasks=2, client=CLIENT, results=[("FAILURE", 1009.0)], cpu_s={})
    assert none["e2e_tasks_per_s"] is None and none["cpu_s_per_1000_tasks"] == {}


def test_per_thousand_adds_a_total() -> None:
    assert per_thousand({"a": 1.0, "b": 3.0}, 2000) == {"a": 0.5, "b": 1.5, "total": 2.0}
    assert per_thousand({"a": 1.0}, 0) == {}


def test_date_done_is_read_as_utc_with_or_without_an_offset() -> None:
    assert done_unix("1970-01-01T00:00:10.5+00:00") == 10.5
    assert done_unix("1970-01-01T00:00:10.5") == 10.5
    assert done_unix("1970-01-01T01:00:10+01:00") == 10.0


def test_a_stored_result_gives_its_status_and_finish_time() -> None:
    raw = json.dumps(
        {"status": "SUCCESS", "result": None, "date_done": "1970-01-01T00:01:00+00:00"}
    ).encode()
    assert result_of(raw) == ("SUCCESS", 60.0)


def test_ratios_are_ours_over_each_setup_with_our_cpu_per_thousand() -> None:
    got = ratios(OURS, _celery(500.0, 250.0))

    assert got["ours_over_celery_a"] == 4.0
    assert got["ours_over_celery_b"] == 8.0
    assert got["ours_e2e_tasks_per_s"] == 2000.0
    assert got["ours_cpu_s_per_1000_tasks"] == {"scheduler": 2.0, "tidb": 1.0, "total": 3.0}
    assert ratios(OURS, _celery(None, 250.0))["ours_over_celery_a"] is None


def test_ours_is_read_from_the_json_report_with_or_without_progress_lines() -> None:
    text = json.dumps(OURS, indent=2)
    assert parse_ours(text) == OURS
    assert parse_ours("bench: starting Kafka\n" + text) == OURS
    with pytest.raises(CeleryBenchFailed, match="not a `wsched bench --json` report"):
        parse_ours("bench: Traceback ...")
    with pytest.raises(CeleryBenchFailed, match="without e2e_tasks_per_s"):
        parse_ours('{"setups": {}}')


def test_the_table_shows_both_setups_and_the_ratios() -> None:
    report = {**_celery(500.0, 250.0), "vs_ours": ratios(OURS, _celery(500.0, 250.0))}
    out = io.StringIO()
    Console(file=out, width=200).print(render(report))
    text = out.getvalue()

    assert "Celery (a)" in text and "Celery (b)" in text
    assert "ours / Celery, end to end" in text and "4.00" in text and "8.00" in text
    assert "CPU s per 1,000 tasks: scheduler" in text

    alone = io.StringIO()
    Console(file=alone, width=200).print(render(_celery(500.0, 250.0)))
    assert "ours" not in alone.getvalue()

"""The soak's counting rules, on rows made by hand."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from actors.pipeline.schedules import run_id
from services.chaos.audit import Run, TaskRow, check_runs, count_tasks, read_executions

T0 = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)


def _row(task_id: str, status: str, finished_s: float | None = None) -> TaskRow:
    finished = None if finished_s is None else (T0 + dt.timedelta(seconds=finished_s))
    return TaskRow(
        id=task_id, status=status, finished_at=finished and finished.replace(tzinfo=None)
    )


def test_accepted_tasks_missing_or_not_terminal_are_lost() -> None:
    accepted = {"a": T0.timestamp(), "b": T0.timestamp(), "c": T0.timestamp(), "d": T0.timestamp()}
    rows = {
        "a": _row("a", "succeeded", 2.5),
        "b": _row("b", "queued"),
        "d": _row("d", "dead", 9),
        "x": _row("x", "succeeded", 1),  # a row nobody was told was accepted: not counted
    }

    counts = count_tasks(accepted=accepted, rows=rows, executions={})

    assert (counts.accepted, counts.succeeded, counts.missing, counts.stuck) == (4, 1, 1, 1)
    assert counts.lost == 2
    assert counts.other_terminal == {"dead": 1}
    assert (counts.longest_wait_s, counts.longest_wait_task) == (9.0, "d")


def test_executions_under_distinct_tokens_are_allowed_one_token_twice_is_not() -> None:
    executions = {"a": ["1.1.a"], "b": ["1.1.b", "2.1.b"], "c": ["1.1.c", "1.1.c"]}

    counts = count_tasks(accepted={}, rows={}, executions=executions)

    assert counts.executed_more_than_once == 1
    assert counts.same_token_twice == 1


def _runs(schedule_id: str, seconds: list[int], status: str = "succeeded") -> list[Run]:
    times = [T0 + dt.timedelta(seconds=s) for s in seconds]
    return [Run(id=run_id(schedule_id, t), fire_at=t, status=status) for t in times]


def test_contiguous_runs_pass() -> None:
    check = check_runs("s1", _runs("s1", [3, 1, 2, 4]), every_s=1, executions={})

    assert check.ok and check.runs == 4 and check.missing == 0 and check.doubled == 0


def test_a_gap_counts_every_fire_time_missing_in_it() -> None:
    check = check_runs("s1", _runs("s1", [1, 2, 5, 6]), every_s=1, executions={})

    assert not check.ok
    assert check.missing == 2 and check.gaps == [3.0]


def test_a_fire_time_with_two_tasks_or_a_misnamed_run_is_doubled() -> None:
    runs = [
        *_runs("s1", [1, 2]),
        Run(id="s1@other", fire_at=T0 + dt.timedelta(seconds=2), status="succeeded"),
    ]

    check = check_runs("s1", runs, every_s=1, executions={})

    assert not check.ok and check.doubled == 2


def test_no_runs_at_all_is_not_ok() -> None:
    assert not check_runs("s1", [], every_s=1, executions={}).ok


def test_the_execution_log_skips_a_line_cut_short(tmp_path: Path) -> None:
    (tmp_path / "w0.log").write_text("a\t1.1.a\nb\t1.1.b\n")
    (tmp_path / "w1.log").write_text("b\t2.1.b\nc")

    assert read_executions(tmp_path) == {"a": ["1.1.a"], "b": ["1.1.b", "2.1.b"]}

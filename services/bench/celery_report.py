"""The figures of ``wsched bench-celery``, its table, and its ratios to ``wsched bench``.

Pure: what :mod:`services.bench.celery_side` read off the processes and Redis goes in,
numbers and a table come out.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from typing import Any

from rich.table import Table

from services.bench.compare import CompareFailed, parse_report

Report = dict[str, Any]

#: Processes whose CPU is counted, in the order they are shown.
PROCESSES = ("client", "worker", "redis")


class CeleryBenchFailed(Exception):
    """A setup did not complete, or a report given is not one; the message says which."""


def done_unix(date_done: str) -> float:
    """Celery's ``date_done`` (ISO 8601, UTC; naive in older releases) as Unix time."""
    parsed = dt.datetime.fromisoformat(date_done)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.timestamp()


def per_thousand(cpu_s: dict[str, float], tasks: int) -> dict[str, float]:
    """CPU seconds per 1,000 tasks for each process, and their total."""
    if tasks <= 0:
        return {}
    per = {name: round(seconds * 1000 / tasks, 3) for name, seconds in cpu_s.items()}
    return {**per, "total": round(sum(cpu_s.values()) * 1000 / tasks, 3)}


def figures(
    *,
    tasks: int,
    client: dict[str, Any],
    results: Iterable[tuple[str, float]],
    cpu_s: dict[str, float],
) -> Report:
    """One setup's figures from the client's summary and the backend's (status, done) pairs."""
    done = [finished for status, finished in results if status == "SUCCESS"]
    first = float(client["first_submit_unix"])
    elapsed = max(done) - first if done else 0.0
    submit_s = float(client["last_submit_unix"]) - first
    return {
        "tasks": tasks,
        "results_succeeded": len(done),
        "e2e_tasks_per_s": round(len(done) / elapsed, 1) if elapsed > 0 else None,
        "e2e_s": round(elapsed, 2),
        "submit_s": round(submit_s, 2),
        "submit_tasks_per_s": round(tasks / submit_s, 1) if submit_s > 0 else None,
        "cpu_s": {name: round(cpu_s[name], 2) for name in PROCESSES if name in cpu_s},
        "cpu_s_per_1000_tasks": per_thousand(
            {name: cpu_s[name] for name in PROCESSES if name in cpu_s}, len(done)
        ),
    }


def ratios(ours: Report, celery: Report) -> Report:
    """Our end-to-end rate over each Celery setup's, and our CPU per 1,000 tasks."""
    e2e = float(ours["e2e_tasks_per_s"])
    throughput = ours.get("details", {}).get("throughput", {})
    cpu = {k: float(v) for k, v in throughput.get("cpu_s", {}).items() if k != "wall"}
    return {
        "ours_e2e_tasks_per_s": e2e,
        "ours_cpu_s_per_1000_tasks": per_thousand(cpu, int(throughput.get("tasks_succeeded", 0))),
        **{
            f"ours_over_celery_{key}": round(e2e / setup["e2e_tasks_per_s"], 2)
            if setup.get("e2e_tasks_per_s")
            else None
            for key, setup in celery["setups"].items()
        },
    }


def parse_ours(text: str) -> Report:
    """``wsched bench --json``'s report, with or without its progress lines before it."""
    try:
        report = json.loads(text) if text.lstrip().startswith("{") else parse_report(text)
    except (CompareFailed, ValueError) as err:
        raise CeleryBenchFailed(f"--ours: not a `wsched bench --json` report ({err})") from err
    if "e2e_tasks_per_s" not in report:
        raise CeleryBenchFailed("--ours: a JSON object without e2e_tasks_per_s")
    return report


def result_of(raw: bytes) -> tuple[str, float]:
    """A result the backend holds (``celery-task-meta-<id>``): its status and ``date_done``."""
    meta = json.loads(raw)
    return str(meta["status"]), done_unix(str(meta["date_done"]))


# -- what it prints -----------------------------------------------------------------------------

#: (key in a setup's report, label), in the order they are shown.
ROWS = (
    ("e2e_tasks_per_s", "end to end, tasks/s"),
    ("results_succeeded", "results in the backend (SUCCESS)"),
    ("e2e_s", "first submit → last result, s"),
    ("submit_tasks_per_s", "client submits, tasks/s"),
)


def render(report: Report) -> Table:
    """Celery's setups side by side, and ours before them when ``vs_ours`` is there."""
    setups, vs = report["setups"], report.get("vs_ours")
    ours = ["ours"] if vs else []
    table = Table(
        "figure", *ours, *(f"Celery ({key})" for key in setups), title="wsched bench-celery"
    )

    def row(label: str, mine: object, key: str, where: str = "") -> None:
        cells = [_shown((s.get(where, s) if where else s).get(key)) for s in setups.values()]
        table.add_row(label, *([_shown(mine)] if vs else []), *cells)

    row("end to end, tasks/s", vs and vs["ours_e2e_tasks_per_s"], "e2e_tasks_per_s")
    if vs:
        over = [vs.get(f"ours_over_celery_{key}") for key in setups]
        shown = ["-" if ratio is None else f"{ratio:.2f}" for ratio in over]
        table.add_row("ours / Celery, end to end", "", *shown)
    for key, label in ROWS[1:]:
        row(label, None, key)
    mine = vs["ours_cpu_s_per_1000_tasks"] if vs else {}
    for name in dict.fromkeys([*mine, *PROCESSES, "total"]):
        row(f"CPU s per 1,000 tasks: {name}", mine.get(name), name, "cpu_s_per_1000_tasks")
    table.add_row("setup", *([""] if vs else []), *(s["title"] for s in setups.values()))
    for name in ("task_acks_late", "worker_prefetch_multiplier", "redis"):
        row(f"setup: {name}", None, name, "config")
    # The Celery runs' own: under their first column, not ours.
    before, after = [""] * len(ours), [""] * (len(setups) - 1)
    for section in ("workload", "machine", "versions"):
        for key, value in report[section].items():
            table.add_row(f"{section}: {key}", *before, str(value), *after)
    return table


def _shown(value: object) -> str:
    if value is None:
        return "-"
    return (
        f"{value:,}"
        if isinstance(value, int | float) and not isinstance(value, bool)
        else str(value)
    )

"""The end of a soak: stop the schedules, wait (bounded) for everything to settle, count.

Every wait here polls a condition with a deadline; none sleeps a guessed time. Settled
means: every accepted task has a terminal row, every run of the paused schedules is
terminal, and ``/stats`` equals the row counts (it lags the rows by up to one flush).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from actors.pipeline.model import TERMINAL, Status
from services.chaos import audit
from services.chaos.tenant import Pipeline, SoakFailed, Tenant, until
from services.store.schema import tasks

Say = Callable[[str], None]
_TERMINAL = [s.value for s in TERMINAL]
#: How long ``/stats`` may take to equal the rows once they have settled: many flushes.
STATS_TIMEOUT_S = 120.0


@dataclass(frozen=True, kw_only=True)
class Ending:
    engine: sa.Engine
    tenant: Tenant
    tasks: Pipeline
    ticks: Pipeline
    #: Schedule name -> id.
    schedules: Mapping[str, str]
    executions_dir: Path
    timeout_s: float
    say: Say


def _open_rows(engine: sa.Engine, pipeline_id: str) -> tuple[int, int]:
    """(rows, rows not terminal) of a pipeline."""
    with engine.connect() as conn:
        total, open_ = conn.execute(
            sa.select(
                sa.func.count(),
                sa.func.coalesce(
                    sa.func.sum(sa.case((tasks.c.status.in_(_TERMINAL), 0), else_=1)), 0
                ),
            ).where(tasks.c.pipeline_id == pipeline_id)
        ).one()
    return int(total), int(open_)


def _settled(end: Ending, accepted: int) -> Callable[[], bool]:
    def check() -> bool:
        try:
            total, open_ = _open_rows(end.engine, end.tasks.id)
            _, open_runs = _open_rows(end.engine, end.ticks.id)
        except sa.exc.OperationalError:
            return False  # TiDB still coming back: the deadline bounds this
        return total >= accepted and open_ == 0 and open_runs == 0

    return check


def _stats_match(end: Ending, pipeline: Pipeline) -> tuple[bool, dict[str, int], dict[str, int]]:
    rows = audit.status_counts(audit.read_tasks(end.engine, pipeline.id).values())
    stats = end.tenant.stats(pipeline)
    same = all(stats.get(s.value, 0) == rows.get(s.value, 0) for s in Status)
    return same, stats, rows


def _wait_stats(end: Ending, pipeline: Pipeline) -> dict[str, Any]:
    try:
        until(lambda: _stats_match(end, pipeline)[0], timeout_s=STATS_TIMEOUT_S, what="/stats")
    except SoakFailed:
        end.say(f"/stats of {pipeline.path} still differs from the rows after {STATS_TIMEOUT_S}s")
    same, stats, rows = _stats_match(end, pipeline)
    return {"equal": same, "stats": stats, "rows": rows}


def finish(end: Ending, accepted: Mapping[str, float]) -> dict[str, Any]:
    """Pause the schedules, drain, and count; the report's figures and its verdict."""
    for name in end.schedules:
        end.tenant.pause(end.ticks, name)
    end.say(f"draining (at most {end.timeout_s:.0f}s)")
    try:
        until(_settled(end, len(accepted)), timeout_s=end.timeout_s, what="the drain", pause_s=2)
    except SoakFailed as err:
        end.say(f"{err}: counting what is there")
    stats = {p.path.rsplit("/", 1)[1]: _wait_stats(end, p) for p in (end.tasks, end.ticks)}
    executions = audit.read_executions(end.executions_dir)
    counts = audit.count_tasks(
        accepted=accepted, rows=audit.read_tasks(end.engine, end.tasks.id), executions=executions
    )
    runs = [
        audit.check_runs(
            sid,
            audit.read_runs(end.engine, end.ticks.id, sid),
            every_s=1.0,
            executions=executions,
            name=name,
        )
        for name, sid in end.schedules.items()
    ]
    ok = counts.lost == 0 and counts.same_token_twice == 0 and all(run.ok for run in runs)
    return {
        "ok": ok,
        "tasks": {**asdict(counts), "lost": counts.lost},
        "schedules": [{**asdict(run), "ok": run.ok} for run in runs],
        "stats": stats,
        "stats_equal": all(s["equal"] for s in stats.values()),
    }

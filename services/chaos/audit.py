"""What the soak found: every accepted task and every schedule run, read back from TiDB.

The counting is pure (rows, acceptances and executions in; figures out) so that its
rules are unit tested; :func:`read_tasks` and :func:`read_runs` are the only reads.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from actors.pipeline.model import TERMINAL, Status
from actors.pipeline.schedules import run_id
from services.store.schema import tasks

_TERMINAL = frozenset(s.value for s in TERMINAL)


@dataclass(frozen=True, kw_only=True)
class TaskRow:
    id: str
    status: str
    finished_at: dt.datetime | None


@dataclass(frozen=True, kw_only=True)
class TaskCounts:
    accepted: int
    succeeded: int
    #: Accepted, ended otherwise than succeeded (dead, failed...), by status.
    other_terminal: dict[str, int]
    #: Accepted, and no row at all.
    missing: int
    #: Accepted, with a row that is not terminal once the soak has drained.
    stuck: int
    #: Tasks run under more than one lease token (allowed: at-least-once).
    executed_more_than_once: int
    #: Tasks a worker was handed twice under the same token (never allowed).
    same_token_twice: int
    #: From the 202 of its batch to its ``finished_at``: the longest, and whose.
    longest_wait_s: float
    longest_wait_task: str

    @property
    def lost(self) -> int:
        """Accepted but missing or not terminal: must be 0."""
        return self.missing + self.stuck


def count_tasks(
    *,
    accepted: Mapping[str, float],
    rows: Mapping[str, TaskRow],
    executions: Mapping[str, Sequence[str]],
) -> TaskCounts:
    """``accepted``: task id -> unix time of its 202; ``executions``: task id -> the lease
    tokens it was handed under, one per execution."""
    other: dict[str, int] = {}
    succeeded = missing = stuck = 0
    longest, longest_id = 0.0, ""
    for task_id, accepted_at in accepted.items():
        row = rows.get(task_id)
        if row is None:
            missing += 1
            continue
        if row.status not in _TERMINAL:
            stuck += 1
            continue
        if row.status == Status.SUCCEEDED:
            succeeded += 1
        else:
            other[row.status] = other.get(row.status, 0) + 1
        if row.finished_at is not None:
            wait = row.finished_at.replace(tzinfo=dt.UTC).timestamp() - accepted_at
            if wait > longest:
                longest, longest_id = wait, task_id
    return TaskCounts(
        accepted=len(accepted),
        succeeded=succeeded,
        other_terminal=other,
        missing=missing,
        stuck=stuck,
        executed_more_than_once=sum(1 for t in executions.values() if len(set(t)) > 1),
        same_token_twice=sum(1 for t in executions.values() if len(set(t)) < len(t)),
        longest_wait_s=round(longest, 1),
        longest_wait_task=longest_id,
    )


@dataclass(frozen=True, kw_only=True)
class Run:
    id: str
    fire_at: dt.datetime
    status: str


@dataclass(frozen=True, kw_only=True)
class RunCheck:
    """One schedule's runs between its first and its last: contiguous, each once."""

    schedule_id: str
    runs: int
    name: str = ""
    first: str = ""
    last: str = ""
    #: Fire times absent between the first run and the last.
    missing: int = 0
    #: Fire times with more than one task, or a task not named by its fire time.
    doubled: int = 0
    not_terminal: int = 0
    executed_more_than_once: int = 0
    gaps: list[float] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.runs > 0 and not (self.missing or self.doubled or self.not_terminal)


def check_runs(
    schedule_id: str,
    runs: Sequence[Run],
    *,
    every_s: float,
    executions: Mapping[str, Sequence[str]],
    name: str = "",
) -> RunCheck:
    ordered = sorted(runs, key=lambda run: run.fire_at)
    if not ordered:
        return RunCheck(schedule_id=schedule_id, runs=0, name=name)
    times = [run.fire_at for run in ordered]
    misnamed = sum(1 for run in ordered if run.id != run_id(schedule_id, run.fire_at))
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
    return RunCheck(
        schedule_id=schedule_id,
        runs=len(ordered),
        name=name,
        first=times[0].isoformat(),
        last=times[-1].isoformat(),
        missing=sum(round(gap / every_s) - 1 for gap in gaps if gap > every_s),
        doubled=len(times) - len(set(times)) + misnamed,
        not_terminal=sum(1 for run in ordered if run.status not in _TERMINAL),
        executed_more_than_once=sum(
            1 for run in ordered if len(set(executions.get(run.id, ()))) > 1
        ),
        gaps=sorted({gap for gap in gaps if gap != every_s}),
    )


def read_executions(directory: Path) -> dict[str, list[str]]:
    """Task id -> the lease tokens it was handed under, from every worker's log."""
    out: dict[str, list[str]] = {}
    for path in sorted(directory.glob("*.log")):
        for line in path.read_text().splitlines():
            task_id, sep, token = line.partition("\t")
            if sep:  # a line cut short by a killed worker has no token: not an execution
                out.setdefault(task_id, []).append(token)
    return out


def read_tasks(engine: sa.Engine, pipeline_id: str) -> dict[str, TaskRow]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(tasks.c.id, tasks.c.status, tasks.c.finished_at).where(
                tasks.c.pipeline_id == pipeline_id
            )
        ).all()
    return {r.id: TaskRow(id=r.id, status=r.status, finished_at=r.finished_at) for r in rows}


def read_runs(engine: sa.Engine, pipeline_id: str, schedule_id: str) -> list[Run]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(tasks.c.id, tasks.c.fire_at, tasks.c.status).where(
                tasks.c.pipeline_id == pipeline_id, tasks.c.schedule_id == schedule_id
            )
        ).all()
    return [Run(id=r.id, fire_at=r.fire_at.replace(tzinfo=dt.UTC), status=r.status) for r in rows]


def status_counts(rows: Iterable[TaskRow]) -> dict[str, int]:
    out: dict[str, int] = {}
    for row in rows:
        out[row.status] = out.get(row.status, 0) + 1
    return out

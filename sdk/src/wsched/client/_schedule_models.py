"""What the schedules API answers, as frozen dataclasses (see ``_models`` for why not
pydantic). Times come back as aware ``datetime``s; each model keeps the answer in ``raw``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

Json = Mapping[str, Any]


def _time(value: Any) -> dt.datetime:
    return dt.datetime.fromisoformat(str(value))


def _maybe_time(value: Any) -> dt.datetime | None:
    return None if value is None else _time(value)


@dataclass(frozen=True, kw_only=True)
class ScheduleRun:
    """One run of a schedule: the task made for a nominal fire time, and its status."""

    #: The nominal fire time (jitter and lateness not included).
    fire_at: dt.datetime
    #: The run's task id, ``<schedule id>@<fire time>``: read it with ``client.tasks``.
    task_id: str
    status: str
    raw: Json = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, body: Json) -> ScheduleRun:
        """Read one item of ``last_runs`` or of ``GET .../schedules/{name}/runs``."""
        return cls(
            fire_at=_time(body["fire_at"]),
            task_id=body["task_id"],
            status=body["status"],
            raw=body,
        )


@dataclass(frozen=True, kw_only=True)
class ScheduleCounts:
    """Fire times run, skipped (``overlap="skip"``) and missed (outside the catch-up
    window), as the pipeline's grain last wrote them."""

    fired: int
    skipped: int
    missed: int

    @classmethod
    def from_json(cls, body: Json) -> ScheduleCounts:
        """Read a schedule's ``counts``."""
        return cls(
            fired=body.get("fired", 0), skipped=body.get("skipped", 0), missed=body.get("missed", 0)
        )


@dataclass(frozen=True, kw_only=True)
class Schedule:
    """A schedule: its definition as given, and what the scheduler made of it.

    ``cron`` or ``every`` is set (text as given); ``catchup`` is the stored policy
    (``window_s``, ``policy``, ``after_pause``). ``next_fire_times`` are the next nominal
    fire times (none while paused or ended), ``last_runs`` the latest runs first.
    """

    id: str
    name: str
    cron: str | None
    every: str | None
    timezone: str
    start_at: dt.datetime | None
    end_at: dt.datetime | None
    jitter: str | None
    data: Json
    max_runs: int | None
    overlap: str
    catchup: Json
    paused: bool
    #: Grows with each change (a pause or resume included).
    version: int
    created_at: dt.datetime
    updated_at: dt.datetime
    next_fire_times: tuple[dt.datetime, ...]
    last_runs: tuple[ScheduleRun, ...]
    counts: ScheduleCounts
    raw: Json = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, body: Json) -> Schedule:
        """Read a schedule as the API answers it."""
        names = ("id", "name", "cron", "every", "timezone", "jitter", "max_runs", "overlap")
        plain: dict[str, Any] = {name: body.get(name) for name in names}
        return cls(
            **plain,
            start_at=_maybe_time(body.get("start_at")),
            end_at=_maybe_time(body.get("end_at")),
            data=body.get("data", {}),
            catchup=body.get("catchup", {}),
            paused=body["paused"],
            version=body["version"],
            created_at=_time(body["created_at"]),
            updated_at=_time(body["updated_at"]),
            next_fire_times=tuple(_time(t) for t in body.get("next_fire_times", ())),
            last_runs=tuple(ScheduleRun.from_json(r) for r in body.get("last_runs", ())),
            counts=ScheduleCounts.from_json(body.get("counts", {})),
            raw=body,
        )


@dataclass(frozen=True, kw_only=True)
class SchedulePage:
    """One page of a pipeline's schedules by name; pass ``next_cursor`` back for the next
    (None: the last)."""

    schedules: tuple[Schedule, ...]
    next_cursor: str | None

    @classmethod
    def from_json(cls, body: Json) -> SchedulePage:
        """Read the answer of ``GET .../schedules``."""
        return cls(
            schedules=tuple(Schedule.from_json(s) for s in body["schedules"]),
            next_cursor=body.get("next_cursor"),
        )


@dataclass(frozen=True, kw_only=True)
class Backfilled:
    """The runs a backfill submitted: one per fire time in its range, those that ran
    already included (the scheduler collapses them, they do not run twice)."""

    runs: int
    task_ids: tuple[str, ...]
    raw: Json = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, body: Json) -> Backfilled:
        """Read the answer of ``POST .../schedules/{name}:backfill``."""
        return cls(runs=body["runs"], task_ids=tuple(body["task_ids"]), raw=body)


@dataclass(frozen=True, kw_only=True)
class Triggered:
    """The run a trigger submitted: its task id and the fire time it stands for."""

    id: str
    fire_at: dt.datetime
    status: str
    raw: Json = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, body: Json) -> Triggered:
        """Read the answer of ``POST .../schedules/{name}:trigger``."""
        return cls(
            id=body["id"],
            fire_at=_time(body["fire_at"]),
            status=body.get("status", "queued"),
            raw=body,
        )

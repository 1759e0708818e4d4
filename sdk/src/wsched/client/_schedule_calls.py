"""The schedule operations as values (see ``_calls``), and a schedule's fields as the API
spells them.

What is retried after a 503 or 429: reads, pause and resume (setting a flag twice is
setting it once) and backfill (its runs carry the ids the scheduler gives them, so a
repeat is collapsed). A create, an update, a delete and a trigger are not: a trigger sent
twice is two runs, its fire time being the moment the API took it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from wsched.client._calls import Call, body_of, pipeline_path, seg
from wsched.client._options import Duration, Instant, dumps, duration_text, instant_text
from wsched.client._schedule_models import (
    Backfilled,
    Schedule,
    SchedulePage,
    ScheduleRun,
    Triggered,
)


@dataclass(frozen=True, kw_only=True)
class Catchup:
    """Fire times missed while no scheduler ran (or, with ``after_pause``, while paused):
    within ``window`` run ``all`` of them, the ``latest`` only, or ``none``; older ones
    are counted as missed, never run."""

    window: Duration = "1h"
    policy: str = "latest"
    after_pause: bool = False

    def to_json(self) -> dict[str, Any]:
        """The API's ``catchup`` object."""
        return {
            "window": duration_text(self.window),
            "policy": self.policy,
            "after_pause": self.after_pause,
        }


def schedule_fields(
    *,
    cron: str | None = None,
    every: Duration | None = None,
    timezone: str | None = None,
    start_at: Instant | None = None,
    end_at: Instant | None = None,
    jitter: Duration | None = None,
    data: Mapping[str, Any] | None = None,
    max_runs: int | None = None,
    overlap: str | None = None,
    catchup: Catchup | None = None,
    paused: bool | None = None,
) -> dict[str, Any]:
    """The fields given (None: unset, so a PATCH leaves them alone), in the API's
    spelling; a naive ``datetime`` raises ``ValueError`` before anything is sent."""
    given: dict[str, Any] = {
        "cron": cron,
        "every": None if every is None else duration_text(every),
        "timezone": timezone,
        "start_at": None if start_at is None else instant_text(start_at),
        "end_at": None if end_at is None else instant_text(end_at),
        "jitter": None if jitter is None else duration_text(jitter),
        "data": None if data is None else dict(data),
        "max_runs": max_runs,
        "overlap": overlap,
        "catchup": None if catchup is None else catchup.to_json(),
        "paused": paused,
    }
    return {key: value for key, value in given.items() if value is not None}


def schedules_path(app: str, pipeline: str) -> str:
    return f"{pipeline_path(app, pipeline)}/schedules"


def schedule_path(app: str, pipeline: str, name: str) -> str:
    return f"{schedules_path(app, pipeline)}/{seg(name)}"


def _schedule(response: Any) -> Schedule:
    return Schedule.from_json(body_of(response))


def create(app: str, pipeline: str, fields: Mapping[str, Any]) -> Call[Schedule]:
    return Call(
        method="POST", path=schedules_path(app, pipeline), body=dumps(dict(fields)), read=_schedule
    )


def page(app: str, pipeline: str, *, limit: int | None, cursor: str | None) -> Call[SchedulePage]:
    given = {"limit": None if limit is None else str(limit), "cursor": cursor}
    return Call(
        method="GET",
        path=schedules_path(app, pipeline),
        params={k: v for k, v in given.items() if v is not None},
        retryable=True,
        read=lambda r: SchedulePage.from_json(body_of(r)),
    )


def get(app: str, pipeline: str, name: str) -> Call[Schedule]:
    return Call(
        method="GET", path=schedule_path(app, pipeline, name), retryable=True, read=_schedule
    )


def update(app: str, pipeline: str, name: str, changes: Mapping[str, Any]) -> Call[Schedule]:
    return Call(
        method="PATCH",
        path=schedule_path(app, pipeline, name),
        body=dumps(dict(changes)),
        read=_schedule,
    )


def set_paused(app: str, pipeline: str, name: str, *, paused: bool) -> Call[Schedule]:
    verb = "pause" if paused else "resume"
    return Call(
        method="POST",
        path=f"{schedule_path(app, pipeline, name)}:{verb}",
        retryable=True,
        read=_schedule,
    )


def trigger(app: str, pipeline: str, name: str) -> Call[Triggered]:
    return Call(
        method="POST",
        path=f"{schedule_path(app, pipeline, name)}:trigger",
        read=lambda r: Triggered.from_json(body_of(r)),
    )


def backfill(
    app: str, pipeline: str, name: str, *, start: Instant, end: Instant
) -> Call[Backfilled]:
    return Call(
        method="POST",
        path=f"{schedule_path(app, pipeline, name)}:backfill",
        body=dumps({"from": instant_text(start), "to": instant_text(end)}),
        retryable=True,
        read=lambda r: Backfilled.from_json(body_of(r)),
    )


def runs(
    app: str,
    pipeline: str,
    name: str,
    *,
    at: Instant | None,
    before: Instant | None,
    limit: int | None,
) -> Call[tuple[ScheduleRun, ...]]:
    given = {
        "at": None if at is None else instant_text(at),
        "before": None if before is None else instant_text(before),
        "limit": None if limit is None else str(limit),
    }
    return Call(
        method="GET",
        path=f"{schedule_path(app, pipeline, name)}/runs",
        params={k: v for k, v in given.items() if v is not None},
        retryable=True,
        read=lambda r: tuple(ScheduleRun.from_json(x) for x in body_of(r)["runs"]),
    )


def delete(app: str, pipeline: str, name: str) -> Call[None]:
    return Call(method="DELETE", path=schedule_path(app, pipeline, name), read=lambda _: None)

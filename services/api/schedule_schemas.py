"""Request and response bodies of the schedules API (``routes/schedules.py``).

The shapes are checked here (types, enums, bounds, unknown fields refused); the meanings
(a cron expression that parses, a known time zone, ``end_at`` after ``start_at``) are
checked by ``services/api/schedule_spec.py`` with the domain's own rules, so the API and
the firing grain cannot disagree.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from services.api.schemas import Name


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CatchupIn(_Request):
    """What to do with fire times missed while the scheduler was down (or paused)."""

    window: str = Field(
        default="1h",
        max_length=64,
        description="Missed fire times older than this are recorded as missed, never run.",
        examples=["1h", "10m"],
    )
    policy: Literal["all", "latest", "none"] = Field(
        default="latest",
        description="Within the window: run all missed fire times, the latest only, or none.",
    )
    after_pause: bool = Field(
        default=False,
        description="Also catch up the fire times a pause skipped over, when resumed.",
    )


_CRON = Field(
    default=None,
    max_length=128,
    description="5 fields (minute hour day month weekday), 6 with a leading seconds field, "
    "a macro (@hourly, @daily, @weekly, @monthly, @yearly) or '@every <duration>'.",
    examples=["0 9 * * MON-FRI", "*/30 * * * * *", "@hourly", "@every 10s"],
)
_EVERY = Field(
    default=None,
    max_length=64,
    description="A fixed interval (at least 1 s) instead of cron.",
    examples=["10s", "15m", "PT1H"],
)
_TZ = Field(
    default=None,
    max_length=64,
    description="IANA time zone of the cron expression; default UTC.",
    examples=["Europe/Paris"],
)
_TIME = Field(default=None, max_length=64, examples=["2026-12-01T00:00:00Z"])


class CreateSchedule(_Request):
    name: Name
    cron: str | None = _CRON
    every: str | None = _EVERY
    timezone: str | None = _TZ
    start_at: str | None = Field(
        default=None, max_length=64, description="No fire time before this (RFC 3339)."
    )
    end_at: str | None = Field(
        default=None, max_length=64, description="No fire time after this (RFC 3339)."
    )
    jitter: str | None = Field(
        default=None,
        max_length=64,
        description="Delay each run by up to this much, the same delay for the same fire time.",
        examples=["30s"],
    )
    data: dict[str, Any] = Field(
        default_factory=dict, description="Each run's task data.", examples=[{"report": "daily"}]
    )
    max_runs: int | None = Field(default=None, ge=1, le=1_000_000_000)
    overlap: Literal["allow", "skip", "buffer_one"] = Field(
        default="allow",
        description="While a run goes on: start the next anyway (allow), skip it, or hold "
        "one (buffer_one).",
    )
    catchup: CatchupIn | None = None
    paused: bool = False


class PatchSchedule(_Request):
    """Fields to change; a new cron or interval applies from now."""

    cron: str | None = _CRON
    every: str | None = _EVERY
    timezone: str | None = _TZ
    start_at: str | None = _TIME
    end_at: str | None = _TIME
    jitter: str | None = Field(default=None, max_length=64)
    data: dict[str, Any] | None = None
    max_runs: int | None = Field(default=None, ge=1, le=1_000_000_000)
    overlap: Literal["allow", "skip", "buffer_one"] | None = None
    catchup: CatchupIn | None = None
    paused: bool | None = None


class Backfill(_Request):
    from_: str = Field(alias="from", max_length=64, examples=["2026-11-01T00:00:00Z"])
    to: str = Field(max_length=64, examples=["2026-11-02T00:00:00Z"])


class RunOut(BaseModel):
    fire_at: str
    task_id: str
    status: str


class CountsOut(BaseModel):
    fired: int = 0
    skipped: int = 0
    missed: int = 0


class ScheduleOut(BaseModel):
    id: str
    name: str
    cron: str | None
    every: str | None
    timezone: str
    start_at: str | None
    end_at: str | None
    jitter: str | None
    data: dict[str, Any]
    max_runs: int | None
    overlap: str
    catchup: dict[str, Any]
    paused: bool
    version: int
    created_at: str
    updated_at: str
    next_fire_times: list[str] = Field(description="The next 5 nominal fire times (UTC).")
    last_runs: list[RunOut]
    counts: CountsOut


class ScheduleList(BaseModel):
    schedules: list[ScheduleOut]
    next_cursor: str | None = None


class RunList(BaseModel):
    runs: list[RunOut]


class Triggered(BaseModel):
    id: str = Field(description="The run's task id.")
    fire_at: str
    status: str = "queued"


class Backfilled(BaseModel):
    runs: int
    task_ids: list[str]

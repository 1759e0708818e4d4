"""``wsched schedules ...``: a pipeline's schedules from the command line, through the SDK.

Commands that answer a schedule (create, get, list, update, pause, resume) print it for a
person, its next fire times as "in 4 min (2026-11-26 17:05:00 UTC, 18:05 Europe/Paris)";
``--json`` prints what the API answered instead, for scripts. Actions (trigger, backfill)
print the API's answer, as the task commands do.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated, Any

import typer
from rich.table import Table

import wsched
from services import client_cli as base
from services import schedule_text

schedules = typer.Typer(
    no_args_is_help=True,
    help="Schedules: a task at each fire time of a cron expression or an interval.",
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print the API's answer as JSON instead.")]
CronOption = Annotated[
    str | None,
    typer.Option(help='5 or 6 fields, a macro or "@every 10s", e.g. "0 9 * * MON-FRI".'),
]
EveryOption = Annotated[
    str | None, typer.Option(help="A fixed interval instead of --cron: 10s, 15m, PT1H.")
]
TimezoneOption = Annotated[
    str | None, typer.Option(help="The cron expression's IANA time zone (default UTC).")
]
StartOption = Annotated[str | None, typer.Option(help="No fire time before this (RFC 3339).")]
EndOption = Annotated[str | None, typer.Option(help="No fire time after this (RFC 3339).")]
JitterOption = Annotated[str | None, typer.Option(help="Delay each run by up to this: 30s.")]
DataOption = Annotated[str | None, typer.Option(help="Each run's task data, a JSON object.")]
MaxRunsOption = Annotated[int | None, typer.Option(help="End after this many runs.")]
OverlapOption = Annotated[
    str | None,
    typer.Option(help="While a run goes on: allow (start the next), skip, buffer_one."),
]
WindowOption = Annotated[
    str | None, typer.Option(help="Missed fire times older than this are not run (1h).")
]
PolicyOption = Annotated[
    str | None, typer.Option(help="Missed fire times within the window: all, latest, none.")
]
AfterPauseOption = Annotated[
    bool | None,
    typer.Option(
        "--catchup-after-pause/--no-catchup-after-pause",
        help="Also catch up the fire times a pause skipped, when resumed.",
        show_default=False,
    ),
]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _print(schedule: wsched.Schedule, as_json: bool) -> None:
    if as_json:
        base._show(schedule.raw)
        return
    for line in schedule_text.describe(schedule, now=_now()):
        base.out.print(line, markup=False, highlight=False)


def _data(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as error:
        raise typer.BadParameter(f"--data is not JSON: {error}") from None
    if not isinstance(parsed, dict):
        raise typer.BadParameter("--data must be a JSON object")
    return parsed


def _catchup(
    window: str | None,
    policy: str | None,
    after_pause: bool | None,
    current: wsched.Schedule | None = None,
) -> wsched.Catchup | None:
    """A catch-up policy from the options given, the rest as ``current`` has it (the API
    replaces the whole policy), else as the API's defaults."""
    if window is None and policy is None and after_pause is None:
        return None
    now = dict(current.catchup) if current is not None else {}
    default = wsched.Catchup()
    return wsched.Catchup(
        window=window or (f"{now['window_s']:g}s" if "window_s" in now else default.window),
        policy=policy or now.get("policy", default.policy),
        after_pause=now.get("after_pause", False) if after_pause is None else after_pause,
    )


@schedules.command("create")
def schedule_create(
    app: str,
    pipeline: str,
    name: str,
    cron: CronOption = None,
    every: EveryOption = None,
    timezone: TimezoneOption = None,
    start_at: StartOption = None,
    end_at: EndOption = None,
    jitter: JitterOption = None,
    data: DataOption = None,
    max_runs: MaxRunsOption = None,
    overlap: OverlapOption = None,
    catchup_window: WindowOption = None,
    catchup_policy: PolicyOption = None,
    catchup_after_pause: AfterPauseOption = None,
    paused: Annotated[bool, typer.Option(help="Create it paused.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Create a schedule (--cron or --every) on a pipeline; each run is a task."""
    if (cron is None) == (every is None):
        base.err.print("[red]Give --cron or --every[/] (one of them).")
        raise typer.Exit(2)
    with base._client() as client:
        created = client.schedules(app, pipeline).create(
            name,
            cron=cron,
            every=every,
            timezone=timezone,
            start_at=start_at,
            end_at=end_at,
            jitter=jitter,
            data=_data(data),
            max_runs=max_runs,
            overlap=overlap,
            catchup=_catchup(catchup_window, catchup_policy, catchup_after_pause),
            paused=paused,
        )
    _print(created, as_json)


@schedules.command("list")
def schedule_list(app: str, pipeline: str, as_json: JsonOption = False) -> None:
    """The pipeline's schedules (every page), each with its next fire time."""
    with base._client() as client:
        found = list(client.schedules(app, pipeline).iterate())
    if as_json:
        base._show({"schedules": [s.raw for s in found]})
        return
    now = _now()
    table = Table("name", "state", "when", "next", "fired", "last run")
    for schedule in found:
        last = schedule.last_runs[0] if schedule.last_runs else None
        table.add_row(
            schedule.name,
            schedule_text.state(schedule),
            schedule_text.recurrence(schedule),
            schedule_text.next_fire(schedule, now=now),
            str(schedule.counts.fired),
            f"{schedule_text.relative(last.fire_at, now=now)} {last.status}" if last else "",
        )
    base.out.print(table)


@schedules.command("get")
def schedule_get(app: str, pipeline: str, name: str, as_json: JsonOption = False) -> None:
    """A schedule: its definition, next fire times, last runs and counts."""
    with base._client() as client:
        _print(client.schedules(app, pipeline).get(name), as_json)


@schedules.command("update")
def schedule_update(
    app: str,
    pipeline: str,
    name: str,
    cron: CronOption = None,
    every: EveryOption = None,
    timezone: TimezoneOption = None,
    start_at: StartOption = None,
    end_at: EndOption = None,
    jitter: JitterOption = None,
    data: DataOption = None,
    max_runs: MaxRunsOption = None,
    overlap: OverlapOption = None,
    catchup_window: WindowOption = None,
    catchup_policy: PolicyOption = None,
    catchup_after_pause: AfterPauseOption = None,
    as_json: JsonOption = False,
) -> None:
    """Change what is given; a new --cron or --every replaces the other, from now."""
    fields: dict[str, Any] = {
        "cron": cron,
        "every": every,
        "timezone": timezone,
        "start_at": start_at,
        "end_at": end_at,
        "jitter": jitter,
        "data": _data(data),
        "max_runs": max_runs,
        "overlap": overlap,
    }
    catchup_given = (catchup_window, catchup_policy, catchup_after_pause)
    if all(v is None for v in (*fields.values(), *catchup_given)):
        base.err.print("[red]Nothing to change[/]: give --cron, --every, --data ...")
        raise typer.Exit(2)
    with base._client() as client:
        target = client.schedules(app, pipeline)
        current = None if all(v is None for v in catchup_given) else target.get(name)
        fields["catchup"] = _catchup(*catchup_given, current=current)
        _print(target.update(name, **fields), as_json)


@schedules.command("pause")
def schedule_pause(app: str, pipeline: str, name: str, as_json: JsonOption = False) -> None:
    """Stop firing until resumed (runs already made go on)."""
    with base._client() as client:
        _print(client.schedules(app, pipeline).pause(name), as_json)


@schedules.command("resume")
def schedule_resume(app: str, pipeline: str, name: str, as_json: JsonOption = False) -> None:
    """Fire again from the next fire time."""
    with base._client() as client:
        _print(client.schedules(app, pipeline).resume(name), as_json)


@schedules.command("trigger")
def schedule_trigger(app: str, pipeline: str, name: str) -> None:
    """One run now, whatever the schedule's times (also while paused); prints its task id."""
    with base._client() as client:
        run = client.schedules(app, pipeline).trigger(name)
    base._show(run.raw)


@schedules.command("backfill")
def schedule_backfill(
    app: str,
    pipeline: str,
    name: str,
    start: Annotated[str, typer.Option("--from", help="The first time (RFC 3339).")],
    end: Annotated[str, typer.Option("--to", help="The last time (RFC 3339), included.")],
) -> None:
    """Run every fire time in [--from, --to] now; those that ran already do not run again."""
    with base._client() as client:
        done = client.schedules(app, pipeline).backfill(name, start=start, end=end)
    base._show(done.raw)
    base.err.print(f"submitted {done.runs} runs")


@schedules.command("runs")
def schedule_runs(
    app: str,
    pipeline: str,
    name: str,
    at: Annotated[str | None, typer.Option(help="The run of this fire time (RFC 3339).")] = None,
    before: Annotated[str | None, typer.Option(help="Runs fired before this time.")] = None,
    limit: Annotated[int, typer.Option()] = 20,
    as_json: JsonOption = False,
) -> None:
    """The schedule's runs, latest first: fire time, status, task id."""
    with base._client() as client:
        runs = client.schedules(app, pipeline).runs(name, at=at, before=before, limit=limit)
    if as_json:
        base._show({"runs": [run.raw for run in runs]})
        return
    table = Table("fire_at (UTC)", "status", "task id")
    for run in runs:
        table.add_row(
            f"{run.fire_at.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S}", run.status, run.task_id
        )
    base.out.print(table)


@schedules.command("delete")
def schedule_delete(app: str, pipeline: str, name: str) -> None:
    """Delete a schedule; its runs stay as tasks."""
    with base._client() as client:
        client.schedules(app, pipeline).delete(name)
    base.err.print(f"deleted schedule {name}")


def register(app: typer.Typer) -> None:
    app.add_typer(schedules, name="schedules")

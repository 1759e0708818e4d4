"""How a schedule reads for a person: its fire times as "in 4 min (2026-11-26 17:05:00
UTC, 18:05 Europe/Paris)" and its definition as a few lines.

Pure functions of a :class:`wsched.Schedule` and the current time, so the CLI's output is
tested without a clock. A fire time is shown in UTC (what the API and the run ids use) and
in the schedule's own time zone (what its cron expression means).
"""

from __future__ import annotations

import datetime as dt
import json
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import wsched

_UNITS = ((86400, "day"), (3600, "h"), (60, "min"), (1, "s"))


def relative(at: dt.datetime, *, now: dt.datetime) -> str:
    """``in 4 min``, ``in 2 h 5 min``, ``in 3 days``, ``12 s ago`` or ``now``: the
    largest unit, and the next one below a few of it."""
    seconds = int((at - now).total_seconds())
    if seconds == 0:
        return "now"
    span = _span(abs(seconds))
    return f"in {span}" if seconds > 0 else f"{span} ago"


def _span(seconds: int) -> str:
    for size, unit in _UNITS:
        if seconds >= size:
            count, rest = divmod(seconds, size)
            text = f"{count} {unit}" + ("s" if unit == "day" and count > 1 else "")
            finer = _finer(size)
            if count < 3 and finer is not None and rest // finer[0]:
                text += f" {rest // finer[0]} {finer[1]}"
            return text
    return "0 s"


def _finer(size: int) -> tuple[int, str] | None:
    sizes = [s for s, _ in _UNITS]
    index = sizes.index(size)
    return _UNITS[index + 1] if index + 1 < len(_UNITS) and size > 60 else None


def fire_time(at: dt.datetime, *, timezone: str, now: dt.datetime) -> str:
    """``in 4 min (2026-11-26 17:05:00 UTC, 18:05 Europe/Paris)``; the local part only
    for a schedule in another zone, with its date when the date differs from UTC's."""
    utc = at.astimezone(dt.UTC)
    shown = [utc.strftime("%Y-%m-%d %H:%M:%S UTC")]
    local = _local(utc, timezone)
    if local is not None:
        clock = "%H:%M:%S" if local.second or local.microsecond else "%H:%M"
        form = clock if local.date() == utc.date() else f"%Y-%m-%d {clock}"
        shown.append(f"{local.strftime(form)} {timezone}")
    return f"{relative(utc, now=now)} ({', '.join(shown)})"


def _local(utc: dt.datetime, timezone: str) -> dt.datetime | None:
    if timezone.upper() in ("UTC", "Z", "ETC/UTC"):
        return None
    try:
        return utc.astimezone(ZoneInfo(timezone))
    except (ZoneInfoNotFoundError, ValueError):
        return None  # the API checked the name; this machine lacks its zone data


def recurrence(schedule: wsched.Schedule) -> str:
    """``cron "0 9 * * MON-FRI" in Europe/Paris`` or ``every 10s``."""
    if schedule.every is not None:
        return f"every {schedule.every}"
    return f'cron "{schedule.cron}" in {schedule.timezone}'


def state(schedule: wsched.Schedule) -> str:
    """``paused``, ``ended`` (no fire time left) or ``active``."""
    if schedule.paused:
        return "paused"
    return "active" if schedule.next_fire_times else "ended"


def next_fire(schedule: wsched.Schedule, *, now: dt.datetime) -> str:
    """The next fire time in human form, or why there is none."""
    if not schedule.next_fire_times:
        return "-" if schedule.paused else "none left"
    return fire_time(schedule.next_fire_times[0], timezone=schedule.timezone, now=now)


def describe(schedule: wsched.Schedule, *, now: dt.datetime) -> list[str]:
    """The schedule as ``wsched schedules get`` prints it, line by line."""
    counts = schedule.counts
    lines = [
        f"{schedule.name}  ({state(schedule)}; id {schedule.id}, version {schedule.version})",
        f"  when       {recurrence(schedule)}{_window(schedule)}",
        f"  data       {json.dumps(dict(schedule.data), ensure_ascii=False)}",
        f"  runs       {_options(schedule)}",
        f"  counts     fired {counts.fired}, skipped {counts.skipped}, missed {counts.missed}",
    ]
    times = [fire_time(t, timezone=schedule.timezone, now=now) for t in schedule.next_fire_times]
    lines += _labelled("next", times or [next_fire(schedule, now=now)])
    runs = [
        f"{r.fire_at.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S} UTC  {r.status:<10} {r.task_id}"
        for r in schedule.last_runs
    ]
    lines += _labelled("last runs", runs or ["none yet"])
    return lines


def _labelled(label: str, values: list[str]) -> list[str]:
    return [f"  {label if i == 0 else '':<10} {value}" for i, value in enumerate(values)]


def _window(schedule: wsched.Schedule) -> str:
    parts = []
    if schedule.start_at is not None:
        parts.append(f" from {schedule.start_at.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S} UTC")
    if schedule.end_at is not None:
        parts.append(f" until {schedule.end_at.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S} UTC")
    return ",".join(parts)


def _options(schedule: wsched.Schedule) -> str:
    catchup = schedule.catchup
    window = catchup.get("window_s")
    parts = [f"overlap {schedule.overlap}"]
    if schedule.jitter:
        parts.append(f"jitter up to {schedule.jitter}")
    if schedule.max_runs is not None:
        parts.append(f"at most {schedule.max_runs}")
    if catchup:
        after = ", also after a pause" if catchup.get("after_pause") else ""
        span = "" if window is None else f" within {_span(int(window))}"
        parts.append(f"catch-up {catchup.get('policy')}{span}{after}")
    return ", ".join(parts)

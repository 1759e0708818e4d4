"""A schedule as a person reads it: fire times relative to now, in UTC and in the
schedule's own zone (with the date where it differs), and the definition line by line."""

from __future__ import annotations

import datetime as dt

import pytest

import wsched
from services.schedule_text import describe, fire_time, relative, state
from tests.unit.wsched.fakes import schedule_json

NOW = dt.datetime(2026, 11, 26, 17, 1, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "now"),
        (12, "in 12 s"),
        (240, "in 4 min"),
        (3700, "in 1 h 1 min"),
        (5 * 3600 + 60, "in 5 h"),
        (86400 + 7200, "in 1 day 2 h"),
        (3 * 86400, "in 3 days"),
        (-12, "12 s ago"),
    ],
)
def test_relative_times_name_the_largest_unit(seconds: int, text: str) -> None:
    assert relative(NOW + dt.timedelta(seconds=seconds), now=NOW) == text


def test_a_fire_time_shows_utc_and_the_schedules_zone() -> None:
    at = dt.datetime(2026, 11, 26, 17, 5, tzinfo=dt.UTC)
    assert fire_time(at, timezone="Europe/Paris", now=NOW) == (
        "in 4 min (2026-11-26 17:05:00 UTC, 18:05 Europe/Paris)"
    )
    assert fire_time(at, timezone="UTC", now=NOW) == "in 4 min (2026-11-26 17:05:00 UTC)"


def test_the_local_date_is_shown_when_it_is_another_day() -> None:
    at = dt.datetime(2026, 11, 26, 17, 5, 30, tzinfo=dt.UTC)
    assert fire_time(at, timezone="Asia/Tokyo", now=NOW) == (
        "in 4 min (2026-11-26 17:05:30 UTC, 2026-11-27 02:05:30 Asia/Tokyo)"
    )


def test_a_schedule_is_described_with_its_next_times_and_last_runs() -> None:
    schedule = wsched.Schedule.from_json(schedule_json(jitter="30s", max_runs=9))
    lines = describe(schedule, now=dt.datetime(2026, 11, 27, 0, 55, tzinfo=dt.UTC))
    assert lines[0] == "nightly  (active; id 0196aaaa, version 1)"
    assert lines[1] == '  when       cron "0 2 * * *" in Europe/Paris'
    assert "overlap allow, jitter up to 30s, at most 9, catch-up latest within 1 h" in lines[3]
    assert "  next       in 5 min (2026-11-27 01:00:00 UTC, 02:00 Europe/Paris)" in lines
    assert any(line.startswith("  last runs  2026-11-26 01:00:00 UTC  succeeded") for line in lines)


def test_a_paused_schedule_has_no_next_time() -> None:
    schedule = wsched.Schedule.from_json(schedule_json(paused=True, next_fire_times=[]))
    assert state(schedule) == "paused"
    assert "  next       -" in describe(schedule, now=NOW)

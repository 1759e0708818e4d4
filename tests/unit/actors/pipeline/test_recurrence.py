"""Cron and interval fire times: fields, macros, seconds, time zones and DST both ways."""

from __future__ import annotations

import datetime as dt

import pytest

from actors.pipeline.recurrence import (
    Cron,
    Every,
    InvalidRecurrence,
    recurrence,
    upcoming,
    zone,
)

UTC = dt.UTC
NY = "America/New_York"


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).astimezone(UTC)


def times(rule: Cron | Every, after: str, count: int = 4) -> list[str]:
    return [t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in upcoming(rule, after=at(after), count=count)]


def cron(expr: str, tz: str = "UTC") -> Cron:
    return Cron.parse(expr, zone(tz))


def test_five_fields_in_utc() -> None:
    assert times(cron("*/15 * * * *"), "2026-11-26T12:07:00+00:00", 3) == [
        "2026-11-26T12:15:00Z",
        "2026-11-26T12:30:00Z",
        "2026-11-26T12:45:00Z",
    ]


def test_six_fields_lead_with_seconds() -> None:
    assert times(cron("*/20 * * * * *"), "2026-11-26T12:00:05+00:00", 3) == [
        "2026-11-26T12:00:20Z",
        "2026-11-26T12:00:40Z",
        "2026-11-26T12:01:00Z",
    ]


@pytest.mark.parametrize(
    ("macro", "expected"),
    [
        ("@hourly", "2026-11-26T13:00:00Z"),
        ("@daily", "2026-11-27T00:00:00Z"),
        ("@midnight", "2026-11-27T00:00:00Z"),
        ("@weekly", "2026-11-29T00:00:00Z"),  # the next Sunday
        ("@monthly", "2026-12-01T00:00:00Z"),
        ("@yearly", "2027-01-01T00:00:00Z"),
        ("@annually", "2027-01-01T00:00:00Z"),
    ],
)
def test_macros(macro: str, expected: str) -> None:
    assert times(cron(macro), "2026-11-26T12:07:00+00:00", 1) == [expected]


def test_a_time_zone_shifts_wall_clock_times() -> None:
    # 09:00 in Paris is 08:00 UTC in winter.
    assert times(cron("0 9 * * *", "Europe/Paris"), "2026-11-26T00:00:00+00:00", 1) == [
        "2026-11-26T08:00:00Z"
    ]


@pytest.mark.parametrize("expr", ["30 1 * * *", "0 30 1 * * *"])
def test_a_wall_clock_time_that_occurs_twice_fires_once(expr: str) -> None:
    # 2026-11-01: New York falls back from 02:00 EDT to 01:00 EST, so 01:30 happens twice.
    fired = times(cron(expr, NY), "2026-10-31T12:00:00+00:00", 3)
    assert fired == [
        "2026-11-01T05:30:00Z",  # 01:30 EDT, the first occurrence
        "2026-11-02T06:30:00Z",  # the next day, 01:30 EST
        "2026-11-03T06:30:00Z",
    ]


@pytest.mark.parametrize("expr", ["30 2 * * *", "0 30 2 * * *"])
def test_a_skipped_wall_clock_time_fires_after_the_gap(expr: str) -> None:
    # 2026-03-08: New York springs forward from 02:00 EST to 03:00 EDT; 02:30 never happens.
    fired = times(cron(expr, NY), "2026-03-07T00:00:00+00:00", 3)
    assert fired == [
        "2026-03-07T07:30:00Z",  # 02:30 EST the day before
        "2026-03-08T07:00:00Z",  # 03:00 EDT, the first instant after the gap
        "2026-03-09T06:30:00Z",  # 02:30 EDT
    ]


def test_an_hourly_schedule_keeps_real_time_through_the_repeated_hour() -> None:
    fired = times(cron("0 * * * *", NY), "2026-11-01T04:30:00+00:00", 3)
    assert fired == ["2026-11-01T05:00:00Z", "2026-11-01T06:00:00Z", "2026-11-01T07:00:00Z"]


def test_every_counts_from_its_anchor() -> None:
    rule = Every(every_s=10, anchor=at("2026-11-26T12:00:03+00:00"))
    assert times(rule, "2026-11-26T12:00:00+00:00", 3) == [
        "2026-11-26T12:00:03Z",
        "2026-11-26T12:00:13Z",
        "2026-11-26T12:00:23Z",
    ]
    assert times(rule, "2026-11-26T12:00:13+00:00", 1) == ["2026-11-26T12:00:23Z"]
    assert rule.count(at("2026-11-26T12:00:03+00:00"), at("2026-11-26T12:01:03+00:00"), cap=99) == 6


def test_cron_counts_fire_times_up_to_a_cap() -> None:
    rule = cron("* * * * *")
    start, end = at("2026-11-26T12:00:00+00:00"), at("2026-11-26T13:00:00+00:00")
    assert rule.count(start, end, cap=1000) == 60
    assert rule.count(start, end, cap=7) == 7


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("61 * * * *", "not a cron expression"),
        ("* * *", "has 3 fields"),
        ("@fortnightly", "unknown macro"),
        ("0 0 30 2 *", "not a cron expression"),  # 30 February never comes
    ],
)
def test_bad_cron_expressions_are_refused(expr: str, message: str) -> None:
    with pytest.raises(InvalidRecurrence, match=message):
        cron(expr)


@pytest.mark.parametrize("name", ["Mars/Olympus", "../etc/passwd", "", "/etc/localtime"])
def test_unknown_time_zones_are_refused(name: str) -> None:
    with pytest.raises(InvalidRecurrence, match="unknown time zone"):
        zone(name)


@pytest.mark.parametrize("every_s", [0, -5, 0.5, float("inf"), float("nan")])
def test_intervals_below_a_second_or_not_finite_are_refused(every_s: float) -> None:
    with pytest.raises(InvalidRecurrence, match="interval"):
        recurrence(cron=None, every_s=every_s, timezone="UTC", anchor=at("2026-11-26T00:00:00Z"))


def test_exactly_one_of_cron_and_every() -> None:
    anchor = at("2026-11-26T00:00:00+00:00")
    with pytest.raises(InvalidRecurrence, match="not both"):
        recurrence(cron="* * * * *", every_s=10, timezone="UTC", anchor=anchor)
    with pytest.raises(InvalidRecurrence, match="not both"):
        recurrence(cron=None, every_s=None, timezone="UTC", anchor=anchor)

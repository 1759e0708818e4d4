"""run_at and delay: each bad time is a 422 naming its field; a past run_at runs now."""

from __future__ import annotations

import datetime as dt

import pytest

from services.api.errors import ApiError
from services.api.when import due_at, parse_duration, parse_run_at

NOW = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)
YEAR = dt.timedelta(days=365)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("15m", 900),
        ("2h", 7200),
        ("1h30m", 5400),
        ("1.5h", 5400),
        ("250ms", 0.25),
        ("7d", 604800),
        ("0s", 0),
        ("PT15M", 900),
        ("P1DT2H", 93600),
        ("pt90s", 90),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text, field="delay").total_seconds() == seconds


@pytest.mark.parametrize(
    "text", ["", "90", "s", "10 s", "1h-5m", "5x", "-5s", "-PT5M", "P", "x" * 65]
)
def test_bad_durations_name_the_field(text: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse_duration(text, field="tasks[2].delay")
    assert caught.value.status == 422
    assert "tasks[2].delay" in caught.value.detail


def test_run_at_needs_an_offset_and_is_kept_in_utc() -> None:
    assert parse_run_at("2026-11-26T13:00:00+01:00", field="run_at") == NOW
    for bad in ("2026-11-26T12:00:00", "tomorrow", "2026-13-01T00:00:00Z", ""):
        with pytest.raises(ApiError, match="run_at"):
            parse_run_at(bad, field="run_at")


def test_due_at_from_either_field() -> None:
    assert due_at(run_at=None, delay=None, now=NOW, max_horizon=YEAR) is None
    assert due_at(run_at=None, delay="30s", now=NOW, max_horizon=YEAR) == NOW + dt.timedelta(
        seconds=30
    )
    later = "2026-11-27T12:00:00Z"
    assert due_at(run_at=later, delay=None, now=NOW, max_horizon=YEAR) == NOW + dt.timedelta(1)


def test_a_past_run_at_or_a_zero_delay_runs_now() -> None:
    assert due_at(run_at="2020-01-01T00:00:00Z", delay=None, now=NOW, max_horizon=YEAR) is None
    assert due_at(run_at=None, delay="0s", now=NOW, max_horizon=YEAR) is None


def test_both_fields_or_beyond_the_horizon_are_refused() -> None:
    with pytest.raises(ApiError, match="not both"):
        due_at(run_at="2026-11-27T12:00:00Z", delay="1s", now=NOW, max_horizon=YEAR)
    with pytest.raises(ApiError, match=r"tasks\[0\]\.delay: .*more than 365 days"):
        due_at(run_at=None, delay="366d", now=NOW, max_horizon=YEAR, where="tasks[0].")
    with pytest.raises(ApiError, match=r"run_at: .*more than"):
        due_at(run_at="2030-01-01T00:00:00Z", delay=None, now=NOW, max_horizon=YEAR)

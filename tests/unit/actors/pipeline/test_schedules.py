"""The pure rules of a schedule's firing: catch-up, overlap, jitter, limits, changes."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pytest

from actors.pipeline.recurrence import Every
from actors.pipeline.schedules import (
    CatchupPolicy,
    Overlap,
    ScheduleSpec,
    ScheduleState,
    follow,
    format_fire,
    jitter_s,
    plan,
    run_id,
)

T0 = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)


def s(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def spec(**overrides: Any) -> ScheduleSpec:
    values: dict[str, Any] = {
        "id": "sch-1",
        "name": "nightly",
        "version": 1,
        "rule": Every(every_s=60, anchor=T0),
        "data": b"{}",
    }
    values.update(overrides)
    return ScheduleSpec(**values)


def state(next_fire: dt.datetime | None, **overrides: Any) -> ScheduleState:
    return ScheduleState(schedule_id="sch-1", version=1, next_fire_at=next_fire, **overrides)


def test_nothing_is_due_before_the_next_fire_time() -> None:
    assert plan(spec(), state(s(60)), now=s(59), previous_running=False) is None


def test_a_due_fire_time_runs_and_the_next_is_armed() -> None:
    decided = plan(spec(), state(s(60)), now=s(60.2), previous_running=False)
    assert decided is not None
    assert decided.runs == (s(60),)
    assert decided.state.next_fire_at == s(120)
    assert decided.state.fired == 1
    assert decided.state.last_task_id == "sch-1@2026-11-26T12:01:00Z"


def test_a_run_id_names_the_schedule_and_the_nominal_time() -> None:
    assert run_id("sch-1", s(0)) == "sch-1@2026-11-26T12:00:00Z"
    assert format_fire(s(0.5)) == "2026-11-26T12:00:00.500000Z"


@pytest.mark.parametrize(
    ("policy", "runs", "missed"),
    [
        # Down from 12:00 to 12:10:00.5, window 5 minutes: 12:01..12:05 are beyond it.
        (CatchupPolicy.ALL, [s(360 + 60 * i) for i in range(5)], 5),
        (CatchupPolicy.LATEST, [s(600)], 9),
        (CatchupPolicy.NONE, [s(600)], 9),
    ],
)
def test_catch_up_after_downtime(
    policy: CatchupPolicy, runs: list[dt.datetime], missed: int
) -> None:
    sp = spec(catchup=policy, catchup_window_s=300)
    decided = plan(sp, state(s(60)), now=s(600.5), previous_running=False)
    assert decided is not None
    assert list(decided.runs) == runs
    assert decided.state.missed == missed
    assert decided.state.next_fire_at == s(660)


def test_latest_catch_up_runs_the_latest_late_time_when_none_is_on_time() -> None:
    sp = spec(catchup=CatchupPolicy.LATEST, catchup_window_s=3600)
    decided = plan(sp, state(s(60)), now=s(630), previous_running=False)
    assert decided is not None
    assert decided.runs == (s(600),)  # 30 s old: on time, the late ones are missed
    decided = plan(sp, state(s(60)), now=s(659), previous_running=False)
    assert decided is not None
    assert decided.runs == (s(600),)  # 59 s old: late, but the latest of the late
    assert decided.state.missed == 9


def test_a_long_downtime_is_counted_not_flooded() -> None:
    sp = spec(rule=Every(every_s=1, anchor=T0), catchup=CatchupPolicy.ALL, catchup_window_s=60)
    decided = plan(sp, state(s(1)), now=s(86_400), previous_running=False)
    assert decided is not None
    assert len(decided.runs) == 61  # the window's fire times, not a day's worth
    assert decided.state.missed == 86_400 - 61


def test_overlap_skip_fires_nothing_while_the_last_run_goes_on() -> None:
    sp = spec(overlap=Overlap.SKIP)
    decided = plan(sp, state(s(60), last_task_id="x"), now=s(60), previous_running=True)
    assert decided is not None
    assert decided.runs == ()
    assert decided.state.skipped == 1
    assert decided.state.next_fire_at == s(120)


def test_overlap_buffer_one_holds_one_and_skips_the_rest() -> None:
    sp = spec(overlap=Overlap.BUFFER_ONE)
    first = plan(sp, state(s(60)), now=s(60), previous_running=True)
    assert first is not None
    assert first.runs == ()
    assert first.state.buffered_fire_at == s(60)
    second = plan(sp, first.state, now=s(120), previous_running=True)
    assert second is not None
    assert second.runs == ()
    assert second.state.buffered_fire_at == s(60)
    assert second.state.skipped == 1
    released = plan(sp, second.state, now=s(125), previous_running=False)
    assert released is not None
    assert released.runs == (s(60),)
    assert released.state.buffered_fire_at is None
    assert released.state.last_task_id == run_id("sch-1", s(60))


def test_overlap_allow_ignores_running_runs() -> None:
    decided = plan(spec(), state(s(60)), now=s(60), previous_running=True)
    assert decided is not None
    assert decided.runs == (s(60),)


def test_max_runs_ends_the_schedule() -> None:
    sp = spec(max_runs=2)
    decided = plan(sp, state(s(60), fired=1), now=s(60), previous_running=False)
    assert decided is not None
    assert decided.runs == (s(60),)
    assert decided.state.next_fire_at is None
    assert plan(sp, decided.state, now=s(600), previous_running=False) is None


def test_end_at_stops_firing_and_start_at_delays_the_first() -> None:
    sp = spec(start_at=s(300), end_at=s(420), catchup=CatchupPolicy.ALL)
    first = follow(sp, None, now=s(0))
    assert first.next_fire_at == s(300)
    decided = plan(sp, dataclasses.replace(first), now=s(420), previous_running=False)
    assert decided is not None
    assert decided.runs == (s(300), s(360), s(420))
    assert decided.state.next_fire_at is None


def test_a_paused_schedule_fires_nothing() -> None:
    assert plan(spec(paused=True), state(s(60)), now=s(600), previous_running=False) is None


def test_resume_skips_the_paused_fire_times_unless_asked() -> None:
    paused = state(s(60), fired=1, last_fire_at=s(0))
    resumed = follow(spec(version=2), paused, now=s(300.5))
    assert resumed.next_fire_at == s(360)
    assert resumed.skipped == 5  # 12:01 .. 12:05
    caught = follow(spec(version=2, catchup_paused=True), paused, now=s(300.5))
    assert caught.next_fire_at == s(60)


def test_jitter_is_deterministic_and_bounded() -> None:
    delays = {jitter_s("sch-1", s(60 * i), jitter=30) for i in range(200)}
    assert all(0 <= d < 30 for d in delays)
    assert len(delays) > 150  # spread, not one value
    assert jitter_s("sch-1", s(60), jitter=30) == jitter_s("sch-1", s(60), jitter=30)
    assert jitter_s("sch-1", s(60), jitter=0) == 0
    sp = spec(jitter_s=30)
    decided = plan(sp, state(s(60)), now=s(60), previous_running=False)
    assert decided is not None
    assert decided.due_at(sp, s(60)) == s(60 + jitter_s("sch-1", s(60), jitter=30))


def test_state_round_trips_through_its_document() -> None:
    st = state(s(60), fired=3, last_fire_at=s(0), buffered_fire_at=s(30), last_task_id="x")
    assert ScheduleState.from_doc(st.to_doc()) == st


def test_spec_from_its_stored_document() -> None:
    doc = {
        "cron": "0 9 * * *",
        "timezone": "Europe/Paris",
        "data_json": '{"a":1}',
        "overlap": "skip",
        "catchup": {"window_s": 600, "policy": "all"},
        "jitter_s": 5,
        "created_at": T0.isoformat(),
    }
    sp = ScheduleSpec.from_doc(id="sch-1", name="n", version=3, paused=False, doc=doc)
    assert sp.overlap is Overlap.SKIP
    assert sp.catchup is CatchupPolicy.ALL
    assert sp.catchup_window_s == 600
    assert sp.data == b'{"a":1}'
    assert sp.first_after(T0) == dt.datetime(2026, 11, 27, 8, 0, tzinfo=dt.UTC)

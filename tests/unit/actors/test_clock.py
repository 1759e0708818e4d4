"""The fake clock wakes sleepers and timers in deadline order, only when advanced."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from actors.clock import FakeClock, MonotonicClock


async def test_sleepers_wake_in_deadline_order_only_when_time_reaches_them() -> None:
    clock = FakeClock()
    woke: list[str] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append(f"{name}@{clock.now():g}")

    tasks = [asyncio.create_task(sleeper(n, s)) for n, s in [("b", 2.0), ("a", 1.0), ("c", 3.0)]]
    await clock.advance(0.5)
    assert woke == []
    await clock.advance(2.0)
    assert woke == ["a@1", "b@2"]
    await clock.advance(10.0)
    await asyncio.gather(*tasks)
    assert woke == ["a@1", "b@2", "c@3"]
    assert clock.now() == 12.5


async def test_a_timer_rearmed_by_its_callback_fires_again_within_one_advance() -> None:
    clock = FakeClock()
    fired: list[float] = []

    def tick() -> None:
        fired.append(clock.now())
        clock.call_later(1.0, tick)

    clock.call_later(1.0, tick)
    await clock.advance(3.0)

    assert fired == [1.0, 2.0, 3.0]


async def test_cancelled_callbacks_never_run_and_are_not_pending() -> None:
    clock = FakeClock()
    fired: list[str] = []
    clock.call_later(1.0, lambda: fired.append("kept"))
    clock.call_later(1.0, lambda: fired.append("cancelled")).cancel()
    assert clock.pending == 1

    await clock.advance(1.0)
    assert fired == ["kept"]
    assert clock.pending == 0


async def test_wall_time_moves_with_the_clock_and_time_never_goes_back() -> None:
    start = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    clock = FakeClock(wall_start=start)
    await clock.advance(90.0)

    assert clock.wall() == start + dt.timedelta(seconds=90)
    with pytest.raises(ValueError, match="only moves forward"):
        await clock.advance(-1.0)


async def test_the_monotonic_clock_schedules_on_the_event_loop() -> None:
    clock = MonotonicClock()
    done = asyncio.Event()
    before = clock.now()
    clock.call_later(0.0, done.set)

    await asyncio.wait_for(done.wait(), 2.0)
    assert clock.now() >= before
    assert clock.wall().tzinfo is dt.UTC

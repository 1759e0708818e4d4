"""Token bucket arithmetic: refill, all-or-nothing draws, slices, Retry-After."""

from __future__ import annotations

import math

import pytest

from services.quotas import BucketState, draw, full, refill, retry_after_s


def test_a_new_bucket_is_full() -> None:
    assert full(burst=10, now_s=5.0) == BucketState(tokens=10.0, at_s=5.0)


def test_refill_adds_the_rate_per_second_up_to_the_burst() -> None:
    empty = BucketState(tokens=0.0, at_s=100.0)
    assert refill(empty, rate=4.0, burst=10, now_s=101.5).tokens == pytest.approx(6.0)
    assert refill(empty, rate=4.0, burst=10, now_s=200.0).tokens == 10.0


def test_a_clock_that_went_back_adds_nothing() -> None:
    state = BucketState(tokens=3.0, at_s=100.0)
    assert refill(state, rate=4.0, burst=10, now_s=99.0).tokens == 3.0


def test_a_draw_takes_what_is_needed_and_up_to_what_is_wanted() -> None:
    state = BucketState(tokens=7.0, at_s=0.0)
    result = draw(state, rate=1.0, burst=10, now_s=0.0, need=2, want=5)
    assert (result.granted, result.wait_s) == (5, 0.0)
    assert result.state.tokens == pytest.approx(2.0)
    # Fewer than wanted but at least the need: all there is, in whole tokens.
    result = draw(result.state, rate=1.0, burst=10, now_s=0.5, need=1, want=5)
    assert result.granted == 2
    assert result.state.tokens == pytest.approx(0.5)


def test_a_draw_short_of_its_need_takes_nothing_and_says_how_long_to_wait() -> None:
    state = BucketState(tokens=1.0, at_s=0.0)
    result = draw(state, rate=2.0, burst=10, now_s=0.0, need=4, want=4)
    assert result.granted == 0
    assert result.wait_s == pytest.approx(1.5)
    assert result.state.tokens == pytest.approx(1.0)  # nothing spent
    later = draw(result.state, rate=2.0, burst=10, now_s=1.5, need=4, want=4)
    assert later.granted == 4


def test_a_zero_rate_never_refills() -> None:
    result = draw(BucketState(tokens=0.0, at_s=0.0), rate=0.0, burst=5, now_s=10.0, need=1, want=1)
    assert result.granted == 0
    assert math.isinf(result.wait_s)


def test_over_a_long_run_the_grants_match_the_rate() -> None:
    state, granted = full(burst=5, now_s=0.0), 0
    for step in range(1, 1001):  # 100 s of draws every 0.1 s, each wanting 10
        result = draw(state, rate=20.0, burst=5, now_s=step / 10, need=1, want=10)
        state, granted = result.state, granted + result.granted
    # The first draw finds the full burst (the 0.1 s before it refilled nothing over
    # it), each of the 999 others the 2 tokens 0.1 s of the rate adds.
    assert granted == 5 + 999 * 2


@pytest.mark.parametrize(
    ("wait_s", "header"), [(0.01, 1), (1.0, 1), (1.2, 2), (30.0, 30), (math.inf, 3600)]
)
def test_retry_after_is_whole_seconds_and_at_least_one(wait_s: float, header: int) -> None:
    assert retry_after_s(wait_s) == header

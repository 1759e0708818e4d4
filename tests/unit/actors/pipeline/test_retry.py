"""Backoff arithmetic: doubling up to a cap, jitter bounded and repeatable."""

from __future__ import annotations

import pytest

from actors.pipeline.retry import Backoff


def test_pauses_grow_by_the_multiplier_up_to_the_cap_without_jitter() -> None:
    backoff = Backoff(initial_s=1, multiplier=2, max_s=10, jitter=0)
    pauses = [backoff.delay_s(failed_attempt=n, task_id="t") for n in range(1, 7)]
    assert pauses == [1, 2, 4, 8, 10, 10]


def test_jitter_stays_within_its_band_and_repeats_for_the_same_attempt() -> None:
    backoff = Backoff(initial_s=10, multiplier=1, max_s=100, jitter=0.2)
    pauses = [backoff.delay_s(failed_attempt=1, task_id=f"t{i}") for i in range(500)]
    assert all(8 <= p <= 12 for p in pauses)
    assert len(set(pauses)) > 400  # tasks that failed together spread out
    assert backoff.delay_s(failed_attempt=1, task_id="t7") == pauses[7]  # a replay agrees


def test_jitter_never_passes_the_cap() -> None:
    backoff = Backoff(initial_s=100, multiplier=2, max_s=100, jitter=1)
    assert all(backoff.delay_s(failed_attempt=3, task_id=f"t{i}") <= 100 for i in range(200))


@pytest.mark.parametrize(
    "fields",
    [{"initial_s": -1}, {"max_s": -1}, {"multiplier": 0.5}, {"jitter": 1.5}, {"jitter": -0.1}],
)
def test_impossible_backoffs_are_refused(fields: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="backoff"):
        Backoff(**fields)

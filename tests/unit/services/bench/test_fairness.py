"""bench-fairness's ratios: B's p99 with the flood over its better run alone."""

from __future__ import annotations

from services.bench.fairness import _ratios


def phase(submit: float, end_to_end: float) -> dict[str, float]:
    return {"submit_p99_ms": submit, "end_to_end_p99_ms": end_to_end}


def test_the_flood_is_compared_with_the_better_run_alone() -> None:
    ratios = _ratios(phase(100, 200), phase(80, 250), phase(120, 300))
    assert ratios["submit_p99"] == 1.5  # 120 / 80
    assert ratios["end_to_end_p99"] == 1.5  # 300 / 200
    assert ratios["within_1_5x"] is True
    assert ratios["submit_p99_alone_vs_again"] == 0.8
    assert ratios["end_to_end_p99_alone_vs_again"] == 1.25


def test_one_p99_over_the_bound_fails_the_goal() -> None:
    ratios = _ratios(phase(100, 100), phase(100, 100), phase(100, 151))
    assert ratios["within_1_5x"] is False

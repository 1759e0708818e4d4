"""The replica's schedule check: which grains are told to read their schedules."""

from __future__ import annotations

from actors.pipeline.model import GrainKey, GrainSnapshot
from services.scheduler.schedule_sync import differing


def snapshot(pipeline_id: str, versions: dict[str, int] | None) -> GrainSnapshot:
    return GrainSnapshot(
        key=GrainKey(pipeline_id=pipeline_id),
        epoch=1,
        stats={},
        totals={},
        leased=0,
        taken_at=0.0,
        schedule_versions=versions,
    )


def test_only_grains_whose_versions_differ_are_told() -> None:
    snapshots = {
        s.key: s
        for s in (
            snapshot("same", {"s": 2}),
            snapshot("older", {"s": 1}),
            snapshot("dropped", {"s": 1}),
            snapshot("not-first-slice", None),
        )
    }
    stored = {"same": {"s": 2}, "older": {"s": 2}, "not-first-slice": {"s": 9}}
    pipelines = ["same", "older", "dropped", "not-first-slice"]
    assert differing(pipelines, stored, snapshots) == {"older": {"s": 2}, "dropped": {}}


def test_an_inactive_grain_is_told_only_if_it_has_schedules() -> None:
    stored = {"with": {"s": 1}}
    assert differing(["with", "without"], stored, {}) == {"with": {"s": 1}}


def test_an_inactive_grain_resting_with_a_wake_up_is_left_to_it() -> None:
    """It reads its schedules when woken, and the API makes it due when one changes:
    telling it every 30 s would wake it every 30 s."""
    stored = {"resting": {"s": 1}, "stopped": {"s": 1}}
    assert differing(["resting", "stopped"], stored, {}, resting={"resting"}) == {
        "stopped": {"s": 1}
    }

"""The fault schedule: a seed replays it exactly; it covers what it was asked to."""

from __future__ import annotations

from services.chaos.plan import make_plan


def test_the_same_seed_gives_the_same_faults() -> None:
    first = make_plan(seed=42, replica_kills=10, replicas=3, span_s=300)
    again = make_plan(seed=42, replica_kills=10, replicas=3, span_s=300)
    other = make_plan(seed=43, replica_kills=10, replicas=3, span_s=300)

    assert first == again
    assert first != other


def test_every_fault_is_planned_once_inside_the_span_in_time_order() -> None:
    faults = make_plan(seed=7, replica_kills=10, replicas=3, span_s=200)

    targets = [fault.target for fault in faults]
    assert targets.count("replica") == 10
    assert targets.count("kafka") == 1 and targets.count("tidb") == 1
    offsets = [fault.at_s for fault in faults]
    assert offsets == sorted(offsets)
    assert all(20 <= at <= 180 for at in offsets)
    assert all(0 <= fault.replica < 3 for fault in faults)
    assert all(1 <= fault.down_s <= 6 for fault in faults)


def test_infra_kills_can_be_left_out() -> None:
    faults = make_plan(seed=1, replica_kills=2, replicas=3, span_s=60, infra_kills=False)

    assert [fault.target for fault in faults] == ["replica", "replica"]

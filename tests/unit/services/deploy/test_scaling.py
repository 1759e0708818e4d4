from __future__ import annotations

from typing import Any

import pytest

from services.deploy.scaling import (
    KNOWN_KEYS,
    ScalingPolicy,
    desired_replicas,
    next_idle_since,
)

# -- parsing -------------------------------------------------------------------------------


def test_defaults() -> None:
    expected = ScalingPolicy(
        min_replicas=1, max_replicas=10, tasks_per_replica=10, idle_s=300, cooldown_s=60
    )
    assert ScalingPolicy.from_mapping({}) == expected
    assert ScalingPolicy.from_mapping(None) == expected
    assert not expected.keda


def test_every_key() -> None:
    policy = ScalingPolicy.from_mapping(
        {
            "min_replicas": 0,
            "max_replicas": 3,
            "tasks_per_replica": 25,
            "idle_s": 12.5,
            "cooldown_s": 0,
            "keda": {"enabled": True, "pollingInterval": 30},
            "autoscaler": "builtin",
        }
    )
    assert policy == ScalingPolicy(
        min_replicas=0, max_replicas=3, tasks_per_replica=25, idle_s=12.5, cooldown_s=0, keda=True
    )


def test_null_takes_the_default() -> None:
    policy = ScalingPolicy.from_mapping({"max_replicas": None, "keda": {"enabled": None}})
    assert policy.max_replicas == 10 and not policy.keda


def test_min_may_equal_max() -> None:
    assert ScalingPolicy.from_mapping({"min_replicas": 4, "max_replicas": 4}).max_replicas == 4


@pytest.mark.parametrize(
    ("scaling", "message"),
    [
        ({"min_replicas": -1}, "scaling.min_replicas must be a whole number of at least 0, not -1"),
        ({"min_replicas": 1.5}, "scaling.min_replicas must be a whole number"),
        ({"min_replicas": True}, "scaling.min_replicas must be a whole number"),
        ({"max_replicas": 0}, "scaling.max_replicas must be a whole number of at least 1, not 0"),
        (
            {"max_replicas": "5"},
            "scaling.max_replicas must be a whole number of at least 1, not '5'",
        ),
        (
            {"min_replicas": 5, "max_replicas": 2},
            "scaling.max_replicas must be at least scaling.min_replicas (5), not 2",
        ),
        ({"min_replicas": 11}, "scaling.max_replicas must be at least scaling.min_replicas (11)"),
        (
            {"tasks_per_replica": 0},
            "scaling.tasks_per_replica must be a whole number of at least 1",
        ),
        ({"idle_s": -1}, "scaling.idle_s must be a number of seconds of at least 0, not -1"),
        ({"idle_s": "5m"}, "scaling.idle_s must be a number of seconds"),
        ({"lead_s": -5}, "scaling.lead_s must be a number of seconds of at least 0, not -5"),
        ({"cooldown_s": float("inf")}, "scaling.cooldown_s must be a number of seconds"),
        ({"cooldown_s": False}, "scaling.cooldown_s must be a number of seconds"),
        ({"keda": True}, 'scaling.keda must be an object such as {"enabled": true}, not a boolean'),
        ({"keda": {"enabled": "yes"}}, "scaling.keda.enabled must be true or false, not 'yes'"),
        ({"autoscaler": 1}, "scaling.autoscaler must be a string, not int"),
        ({"maxReplicas": 3}, "scaling.maxReplicas is not a scaling setting; the known keys are"),
    ],
)
def test_bad_scaling_is_refused_with_the_key_named(scaling: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=r"^scaling") as info:
        ScalingPolicy.from_mapping(scaling)
    assert message in str(info.value)


def test_unknown_key_lists_the_known_ones() -> None:
    with pytest.raises(ValueError) as info:
        ScalingPolicy.from_mapping({"max_replicas": 2, "replicas": 3})
    assert all(key in str(info.value) for key in KNOWN_KEYS)


def test_not_a_mapping() -> None:
    bad: Any = [1, 2]
    with pytest.raises(ValueError, match=r"scaling must be an object .* not a list"):
        ScalingPolicy.from_mapping(bad)


# -- the rule ------------------------------------------------------------------------------

DEFAULT = ScalingPolicy()  # 1..10, 10 tasks per replica, cooldown 60, idle 300
TO_ZERO = ScalingPolicy(min_replicas=0, max_replicas=5, idle_s=100, cooldown_s=30)
PINNED = ScalingPolicy(min_replicas=3, max_replicas=3)


@pytest.mark.parametrize(
    ("policy", "backlog", "leased", "current", "now", "last_change", "idle_since", "want"),
    [
        # scale up, immediately, even right after a change
        (DEFAULT, 1, 0, 1, 1000, 999, None, 1),
        (DEFAULT, 11, 0, 1, 1000, 999, None, 2),
        (DEFAULT, 20, 10, 1, 1000, 999, None, 3),
        (DEFAULT, 0, 25, 1, 1000, 999, None, 3),
        # capped at max_replicas
        (DEFAULT, 10_000, 0, 1, 1000, 999, None, 10),
        # work below one replica's share still gets one (even with min 0)
        (TO_ZERO, 1, 0, 0, 1000, None, None, 1),
        # steady
        (DEFAULT, 30, 0, 3, 1000, 999, None, 3),
        # scale down: only once the cooldown since the last change has passed
        (DEFAULT, 10, 0, 5, 1000, 950, None, 5),
        (DEFAULT, 10, 0, 5, 1000, 940, None, 1),
        (DEFAULT, 10, 0, 5, 1000, None, None, 1),
        # no work, min 1: down to min (after the cooldown)
        (DEFAULT, 0, 0, 4, 1000, 990, 990, 4),
        (DEFAULT, 0, 0, 4, 1000, 900, 990, 1),
        # no work, min 0: keep the workers until idle for idle_s ...
        (TO_ZERO, 0, 0, 2, 1000, 0, 950, 2),
        (TO_ZERO, 0, 0, 2, 1000, 0, None, 2),
        # ... then zero
        (TO_ZERO, 0, 0, 2, 1000, 0, 900, 0),
        # ... unless a change was made within the cooldown
        (TO_ZERO, 0, 0, 2, 1000, 990, 900, 2),
        # idle and already at zero: stays there
        (TO_ZERO, 0, 0, 0, 1000, 0, 999, 0),
        # beyond max (the policy shrank): down to max, even within the cooldown
        (TO_ZERO, 100, 0, 9, 1000, 999, None, 5),
        (TO_ZERO, 0, 0, 9, 1000, 999, 999, 5),
        # below min (the policy grew, or someone scaled by hand): up to min at once
        (PINNED, 0, 0, 1, 1000, 999, 500, 3),
        (PINNED, 100, 0, 0, 1000, 999, None, 3),
        (PINNED, 0, 0, 5, 1000, 999, 500, 3),
        # negative figures are treated as no work
        (DEFAULT, -5, 0, 1, 1000, None, 1000, 1),
    ],
)
def test_desired_replicas(
    policy: ScalingPolicy,
    backlog: int,
    leased: int,
    current: int,
    now: float,
    last_change: float | None,
    idle_since: float | None,
    want: int,
) -> None:
    got = desired_replicas(
        policy,
        backlog=backlog,
        leased=leased,
        current=current,
        now=now,
        last_change=last_change,
        idle_since=idle_since,
    )
    assert got == want


def test_tasks_per_replica_rounds_up() -> None:
    policy = ScalingPolicy(tasks_per_replica=7, max_replicas=100)
    wants = [
        desired_replicas(
            policy, backlog=n, leased=0, current=1, now=0, last_change=None, idle_since=None
        )
        for n in (1, 7, 8, 14, 15, 700)
    ]
    assert wants == [1, 1, 2, 2, 3, 100]


@pytest.mark.parametrize(
    ("backlog", "leased", "idle_since", "now", "expected"),
    [
        (0, 0, None, 10.0, 10.0),  # just ran out of work
        (0, 0, 4.0, 10.0, 4.0),  # still idle since then
        (1, 0, 4.0, 10.0, None),  # work again
        (0, 2, None, 10.0, None),  # leased tasks are work
    ],
)
def test_next_idle_since(
    backlog: int, leased: int, idle_since: float | None, now: float, expected: float | None
) -> None:
    assert (
        next_idle_since(backlog=backlog, leased=leased, now=now, idle_since=idle_since) == expected
    )


def test_lead_time_defaults_to_none_and_is_read() -> None:
    assert ScalingPolicy.from_mapping({}).lead_s == 0
    assert ScalingPolicy.from_mapping({"lead_s": 120}).lead_s == 120

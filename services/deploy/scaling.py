"""How many workers a pipeline wants: its ``scaling`` settings and the rule that applies them.

:class:`ScalingPolicy` is a pipeline's ``scaling`` mapping, checked. The API checks it when
a pipeline is created or changed, so its messages are written for tenants;
:func:`desired_replicas` is the built-in scaler's rule (services/scheduler/scaler.py),
pure so that every case is a line of a table in its tests:

- the work is the backlog plus the leased tasks; it wants ``ceil(work /
  tasks_per_replica)`` replicas, at least one while there is work, within
  ``[min_replicas, max_replicas]``;
- scale-ups are immediate; a scale-down waits ``cooldown_s`` after the last change;
- with ``min_replicas: 0`` and no work, the replicas stay as they are until the pipeline
  has been idle for ``idle_s``, then go to zero: a short gap between batches does not
  cost a cold start;
- tasks due within ``lead_s`` (delayed tasks, retries) count as backlog already, so
  workers are started before they are due (the grain counts them; 0: only due tasks).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

DEFAULT_MIN_REPLICAS = 1
DEFAULT_MAX_REPLICAS = 10
DEFAULT_TASKS_PER_REPLICA = 10
DEFAULT_IDLE_S = 300.0
DEFAULT_COOLDOWN_S = 60.0

#: Every key of ``scaling``. ``autoscaler`` is set by the deployer for the chart (which
#: then leaves the replicas to the scheduler); ``keda`` holds KEDA's own settings too.
KNOWN_KEYS = (
    "autoscaler",
    "cooldown_s",
    "idle_s",
    "keda",
    "lead_s",
    "max_replicas",
    "min_replicas",
    "tasks_per_replica",
)


@dataclass(frozen=True, kw_only=True)
class ScalingPolicy:
    min_replicas: int = DEFAULT_MIN_REPLICAS
    max_replicas: int = DEFAULT_MAX_REPLICAS
    tasks_per_replica: int = DEFAULT_TASKS_PER_REPLICA
    idle_s: float = DEFAULT_IDLE_S
    cooldown_s: float = DEFAULT_COOLDOWN_S
    #: KEDA scales this pipeline (``keda.enabled``): the built-in scaler leaves it alone.
    keda: bool = False
    #: Tasks due within this many seconds count as backlog (workers start ahead of them).
    lead_s: float = 0.0

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any] | None) -> ScalingPolicy:
        """The policy a pipeline's ``scaling`` describes; ``ValueError`` says what is wrong.

        A key set to ``null`` takes its default, as Helm treats ``null`` values.
        """
        if mapping is None:
            return cls()
        if not isinstance(mapping, Mapping):
            raise ValueError(
                f'scaling must be an object such as {{"max_replicas": 5}}, not {_kind(mapping)}'
            )
        unknown = sorted(str(key) for key in mapping if key not in KNOWN_KEYS)
        if unknown:
            raise ValueError(
                f"scaling.{unknown[0]} is not a scaling setting; the known keys are "
                f"{', '.join(KNOWN_KEYS)}"
            )
        given = {key: value for key, value in mapping.items() if value is not None}
        min_replicas = _int(given, "min_replicas", DEFAULT_MIN_REPLICAS, minimum=0)
        max_replicas = _int(given, "max_replicas", DEFAULT_MAX_REPLICAS, minimum=1)
        if max_replicas < min_replicas:
            raise ValueError(
                f"scaling.max_replicas must be at least scaling.min_replicas ({min_replicas}), "
                f"not {max_replicas}"
            )
        _autoscaler(given)
        return cls(
            min_replicas=min_replicas,
            max_replicas=max_replicas,
            tasks_per_replica=_int(
                given, "tasks_per_replica", DEFAULT_TASKS_PER_REPLICA, minimum=1
            ),
            idle_s=_seconds(given, "idle_s", DEFAULT_IDLE_S),
            cooldown_s=_seconds(given, "cooldown_s", DEFAULT_COOLDOWN_S),
            keda=_keda(given),
            lead_s=_seconds(given, "lead_s", 0.0),
        )


def _kind(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


def _int(given: Mapping[str, Any], key: str, default: int, *, minimum: int) -> int:
    value = given.get(key, default)
    # bool is an int to Python, never to a tenant.
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(
            f"scaling.{key} must be a whole number of at least {minimum}, not {value!r}"
        )
    return value


def _seconds(given: Mapping[str, Any], key: str, default: float) -> float:
    value = given.get(key, default)
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(f"scaling.{key} must be a number of seconds of at least 0, not {value!r}")
    return float(value)


def _keda(given: Mapping[str, Any]) -> bool:
    keda = given.get("keda", {})
    if not isinstance(keda, Mapping):
        raise ValueError(
            f'scaling.keda must be an object such as {{"enabled": true}}, not {_kind(keda)}'
        )
    enabled = keda.get("enabled", False)
    if enabled is None:
        return False
    if not isinstance(enabled, bool):
        raise ValueError(f"scaling.keda.enabled must be true or false, not {enabled!r}")
    return enabled


def _autoscaler(given: Mapping[str, Any]) -> None:
    value = given.get("autoscaler", "")
    if not isinstance(value, str):
        raise ValueError(f"scaling.autoscaler must be a string, not {_kind(value)}")


def next_idle_since(
    *, backlog: int, leased: int, now: float, idle_since: float | None
) -> float | None:
    """Since when the pipeline has had no work: ``now`` if it just ran out, ``None`` while
    it has some."""
    if backlog > 0 or leased > 0:
        return None
    return now if idle_since is None else idle_since


def desired_replicas(
    policy: ScalingPolicy,
    *,
    backlog: int,
    leased: int,
    current: int,
    now: float,
    last_change: float | None,
    idle_since: float | None,
) -> int:
    """The replicas the pipeline's workers should have now (see the module's docstring).

    ``now``, ``last_change`` and ``idle_since`` are monotonic seconds; ``last_change``
    ``None`` means never (no cooldown), ``idle_since`` ``None`` means busy.
    """
    work = max(backlog, 0) + max(leased, 0)
    if work > 0:
        want = max(math.ceil(work / policy.tasks_per_replica), 1)
    elif policy.min_replicas > 0:
        want = policy.min_replicas
    elif idle_since is not None and now - idle_since >= policy.idle_s:
        want = 0
    else:
        want = current  # idle, but not for long enough to give the workers up
    want = max(min(want, policy.max_replicas), policy.min_replicas)
    if want >= current:
        return want
    if last_change is not None and now - last_change < policy.cooldown_s:
        # Cooling down: no scale-down, except to respect the maximum.
        return min(current, policy.max_replicas)
    return want

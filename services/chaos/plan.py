"""The fault schedule of a soak, drawn from a seed and nothing else.

Pure code: the same seed and sizes give the same faults at the same offsets, so a run
that found something can be replayed with ``--seed`` (what the processes do in between
still differs from run to run; the faults do not).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

Target = Literal["replica", "kafka", "tidb"]

#: Faults start after this share of the span and end before the rest of it, so that the
#: first tasks are flowing before the first kill and the last fault has time to heal.
_MARGIN = 0.1


@dataclass(frozen=True, kw_only=True)
class Fault:
    """``kill -9`` ``target`` (replica number ``replica``) ``at_s`` into the soak, and
    start it again ``down_s`` later."""

    at_s: float
    target: Target
    down_s: float
    replica: int = 0

    def describe(self) -> str:
        name = f"replica {self.replica}" if self.target == "replica" else self.target
        return f"t+{self.at_s:.1f}s kill -9 {name}, down {self.down_s:.1f}s"


def make_plan(
    *, seed: int, replica_kills: int, replicas: int, span_s: float, infra_kills: bool = True
) -> list[Fault]:
    """``replica_kills`` kills of random replicas, and one of Kafka and one of TiDB when
    ``infra_kills``, at random offsets within ``span_s``, in time order."""
    rng = random.Random(seed)  # noqa: S311 - replayable on purpose, not a secret
    targets: list[Target] = ["replica"] * replica_kills
    if infra_kills:
        targets += ["kafka", "tidb"]
    low, high = span_s * _MARGIN, span_s * (1 - _MARGIN)
    faults = [
        Fault(
            at_s=round(rng.uniform(low, high), 1),
            target=target,
            down_s=round(rng.uniform(1.0, 6.0), 1),
            replica=rng.randrange(replicas) if target == "replica" else 0,
        )
        for target in targets
    ]
    return sorted(faults, key=lambda fault: fault.at_s)

"""Token bucket arithmetic: no clock, no I/O, so the stored bucket and the tests share it.

A bucket holds up to ``burst`` tokens and gains ``rate`` a second; a submit of ``n``
tasks spends ``n``. The state is two numbers (tokens, as of when), so it can live in one
database row that every API process draws from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class BucketState:
    tokens: float
    #: Seconds on the clock the caller uses (wall time when processes share the bucket).
    at_s: float


@dataclass(frozen=True, kw_only=True)
class Draw:
    """What a draw took, and if it took nothing, how long until it could."""

    granted: int
    wait_s: float
    state: BucketState


def full(*, burst: int, now_s: float) -> BucketState:
    return BucketState(tokens=float(burst), at_s=now_s)


def refill(state: BucketState, *, rate: float, burst: int, now_s: float) -> BucketState:
    """The bucket at ``now_s``; a clock that went back adds nothing (never a negative span)."""
    elapsed = max(0.0, now_s - state.at_s)
    return BucketState(tokens=min(float(burst), state.tokens + elapsed * rate), at_s=now_s)


def draw(
    state: BucketState, *, rate: float, burst: int, now_s: float, need: int, want: int
) -> Draw:
    """Take between ``need`` and ``want`` whole tokens, or none.

    All or nothing for ``need`` (a batch is accepted whole or refused whole); anything
    above it up to ``want`` is taken only if there, so that a caller can keep a slice for
    the next requests without a round trip each.
    """
    current = refill(state, rate=rate, burst=burst, now_s=now_s)
    if current.tokens + 1e-9 < need:
        wait_s = (need - current.tokens) / rate if rate > 0 else math.inf
        return Draw(granted=0, wait_s=wait_s, state=current)
    granted = min(max(need, want), math.floor(current.tokens + 1e-9))
    after = BucketState(tokens=current.tokens - granted, at_s=now_s)
    return Draw(granted=granted, wait_s=0.0, state=after)


def retry_after_s(wait_s: float) -> int:
    """A Retry-After header's whole seconds for a wait (at least one)."""
    return max(1, math.ceil(wait_s)) if math.isfinite(wait_s) else 3600

"""Backoff between attempts: how long a failed or lost attempt waits before the next,
and the execution timeout that bounds one attempt.

The jitter is a function of (task id, attempt), not a random draw: a grain that replays
its work after a crash decides the same due time again, tests can state exact figures,
and tasks that failed together still spread out.

Pure: no clock, no I/O.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class Backoff:
    #: The pause before the second attempt.
    initial_s: float = 1.0
    #: Each further pause is this many times the one before it.
    multiplier: float = 2.0
    #: No pause is longer than this, jitter included.
    max_s: float = 300.0
    #: Spread: each pause is scaled by a factor in ``[1 - jitter, 1 + jitter]``.
    jitter: float = 0.1

    def __post_init__(self) -> None:
        if self.initial_s < 0 or self.max_s < 0:
            raise ValueError("backoff pauses cannot be negative")
        if self.multiplier < 1:
            raise ValueError("backoff.multiplier must be at least 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("backoff.jitter must be between 0 and 1")

    def delay_s(self, *, failed_attempt: int, task_id: str) -> float:
        """The pause after attempt ``failed_attempt`` (1 for the first) of ``task_id``."""
        base = self.initial_s * self.multiplier ** max(0, failed_attempt - 1)
        base = min(self.max_s, base)
        if not self.jitter:
            return base
        digest = hashlib.blake2b(f"{task_id}\0{failed_attempt}".encode(), digest_size=8)
        unit = int.from_bytes(digest.digest()) / 2**64  # in [0, 1)
        return min(self.max_s, base * (1 + self.jitter * (2 * unit - 1)))


@dataclass(frozen=True, kw_only=True)
class RetryOverride:
    """A task's own retry policy, over its pipeline's: what is None is the pipeline's."""

    max_attempts: int | None = None
    backoff: Backoff | None = None

    def __post_init__(self) -> None:
        if self.max_attempts is not None and not 1 <= self.max_attempts <= 100:
            raise ValueError("retry.max_attempts must be between 1 and 100")


#: An attempt may be given at most this long (a week): a longer one is a mistake of
#: units, and a lease held that long hides a stuck worker.
MAX_EXECUTION_TIMEOUT_S = 7 * 86400.0


def check_execution_timeout(seconds: float) -> float:
    """``seconds`` if it is a usable execution timeout; ValueError saying the bounds else."""
    if not 0 < seconds <= MAX_EXECUTION_TIMEOUT_S:  # also refuses NaN
        raise ValueError(
            f"an execution timeout is more than 0 s and at most 7 days, not {seconds:g} s"
        )
    return seconds

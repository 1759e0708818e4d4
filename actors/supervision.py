"""Restart limits: when a key fails too often it is quarantined with a growing backoff.

Without a cap a poison message or a broken dependency would make an actor fail, restart
and fail again as fast as messages arrive; quarantine turns that into a cheap, clear
``ActorUnavailable`` for callers and a bounded rate of log lines.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from dataclasses import dataclass, field

from actors.actor import GrainId
from actors.clock import Clock
from actors.errors import ActorUnavailable

_log = logging.getLogger("wsched.actors.supervision")


@dataclass(frozen=True, kw_only=True)
class RestartPolicy:
    #: Failures tolerated within ``restart_window_s``; one more quarantines the key.
    max_restarts: int = 3
    restart_window_s: float = 60.0
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 300.0
    #: A key without failures for this long starts again from ``backoff_initial_s``.
    backoff_reset_s: float = 600.0

    def __post_init__(self) -> None:
        if self.max_restarts < 0 or self.restart_window_s <= 0:
            raise ValueError("max_restarts must be >= 0 and restart_window_s > 0")
        if not 0 < self.backoff_initial_s <= self.backoff_max_s:
            raise ValueError("need 0 < backoff_initial_s <= backoff_max_s")

    def backoff_s(self, strikes: int) -> float:
        # Cap the exponent too: 2**strikes would overflow a float long before it mattered.
        return min(self.backoff_initial_s * 2.0 ** min(strikes, 64), self.backoff_max_s)


@dataclass(kw_only=True)
class _Record:
    failures: deque[float] = field(default_factory=deque)
    last_failure_at: float
    last_error: BaseException
    #: Quarantines so far; the exponent of the next backoff.
    strikes: int = 0
    quarantined_until: float = float("-inf")


class Supervisor:
    """Failure history per key; it outlives the key's activations."""

    def __init__(self, *, clock: Clock) -> None:
        self._clock = clock
        self._records: dict[GrainId, _Record] = {}

    def record_failure(self, grain: GrainId, policy: RestartPolicy, err: BaseException) -> float:
        """Count a failure; returns the quarantine it starts in seconds, 0.0 if none."""
        now = self._clock.now()
        record = self._records.get(grain)
        if record is None:
            record = self._records[grain] = _Record(last_failure_at=now, last_error=err)
        elif now - record.last_failure_at >= policy.backoff_reset_s:
            record.strikes = 0
        record.last_failure_at, record.last_error = now, err
        record.failures.append(now)
        while record.failures[0] <= now - policy.restart_window_s:
            record.failures.popleft()
        if len(record.failures) <= policy.max_restarts:
            return 0.0
        backoff_s = policy.backoff_s(record.strikes)
        record.strikes += 1
        record.quarantined_until = now + backoff_s
        _log.error(
            "%s failed %d times within %gs; quarantined for %gs (last error: %r)",
            grain,
            len(record.failures),
            policy.restart_window_s,
            backoff_s,
            err,
        )
        return backoff_s

    def check(self, grain: GrainId, policy: RestartPolicy) -> None:
        """Raise ``ActorUnavailable`` if ``grain`` may not be activated now."""
        record = self._records.get(grain)
        if record is None:
            return
        now = self._clock.now()
        if now < record.quarantined_until:
            raise ActorUnavailable(
                grain=grain,
                retry_after_s=record.quarantined_until - now,
                last_error=record.last_error,
            )
        if now - record.last_failure_at >= policy.backoff_reset_s:
            del self._records[grain]  # forgiven: keeps the table as small as the trouble

    def quarantined_by_kind(self) -> Counter[str]:
        now = self._clock.now()
        return Counter(
            grain.kind for grain, rec in self._records.items() if now < rec.quarantined_until
        )

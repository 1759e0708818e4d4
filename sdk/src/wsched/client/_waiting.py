"""How a handle waits for its task to finish: pure code, the clients do the I/O.

Today the API has no way to wait on its side, so a waiter reads the task again and
again with a growing pause (0.1 s doubling to 2 s): quick answers for quick tasks, few
requests for slow ones. When ``GET .../tasks/{id}?wait=`` exists, a strategy that asks
for ``wait`` and pauses 0 s replaces :class:`PollWithBackoff` without touching the loops.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Protocol


class WaitStrategy(Protocol):
    """What a waiting loop asks before each read, and how long it pauses after one."""

    def params(self, remaining_s: float) -> dict[str, str]:
        """Query parameters for the next read (a long poll would ask to wait here)."""
        ...

    def pause_s(self, reads: int, remaining_s: float) -> float:
        """Seconds to pause after ``reads`` reads that found the task unfinished."""
        ...


@dataclass(frozen=True, kw_only=True)
class PollWithBackoff:
    """Read, pause ``first_s`` doubling to ``max_s``, read again; never past the deadline."""

    first_s: float = 0.1
    factor: float = 2.0
    max_s: float = 2.0

    def params(self, remaining_s: float) -> dict[str, str]:
        """Nothing: the API answers at once."""
        return {}

    def pause_s(self, reads: int, remaining_s: float) -> float:
        """The growing pause, cut to what is left of the wait."""
        pause = min(self.first_s * self.factor ** max(reads - 1, 0), self.max_s)
        return max(min(pause, remaining_s), 0.0)


def timeout_seconds(timeout: float | dt.timedelta | None) -> float | None:
    """Seconds of a wait (None: as long as it takes)."""
    if timeout is None:
        return None
    seconds = timeout.total_seconds() if isinstance(timeout, dt.timedelta) else float(timeout)
    if seconds < 0:
        raise ValueError(f"a timeout cannot be negative ({seconds:g} s)")
    return seconds

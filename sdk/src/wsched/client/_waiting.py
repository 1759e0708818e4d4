"""How a handle waits for its task to finish: pure code, the clients do the I/O.

The default, :class:`LongPoll`, asks the API to hold the read until the task ends
(``GET .../tasks/{id}?wait=``): one request per wait, answered within milliseconds of the
end. :class:`PollWithBackoff` reads again and again with a growing pause (0.1 s doubling
to 2 s), for APIs older than ``wait``.
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


@dataclass(frozen=True, kw_only=True)
class LongPoll:
    """Ask the API to wait (at most ``max_wait_s`` per request, below the client's HTTP
    timeout and the API's bound of 60 s); pause only when a wait ran out.

    The pause after an expired wait costs nothing against an API that waits; against one
    older than ``wait`` (which ignores it and answers at once) it is what keeps the loop
    from spinning, so it grows like :class:`PollWithBackoff`'s.
    """

    max_wait_s: float = 20.0
    backoff: PollWithBackoff = PollWithBackoff()

    def params(self, remaining_s: float) -> dict[str, str]:
        """``wait``: what is left of the caller's wait, cut to ``max_wait_s``."""
        return {"wait": f"{max(min(remaining_s, self.max_wait_s), 0.0):.3f}"}

    def pause_s(self, reads: int, remaining_s: float) -> float:
        """The backoff's pause: reached only after a wait the API let run out."""
        return self.backoff.pause_s(reads, remaining_s)


def timeout_seconds(timeout: float | dt.timedelta | None) -> float | None:
    """Seconds of a wait (None: as long as it takes)."""
    if timeout is None:
        return None
    seconds = timeout.total_seconds() if isinstance(timeout, dt.timedelta) else float(timeout)
    if seconds < 0:
        raise ValueError(f"a timeout cannot be negative ({seconds:g} s)")
    return seconds

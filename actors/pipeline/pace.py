"""How fast a grain ticks: every ``tick_s`` while it has work, slowly once it has none.

Most pipelines are idle most of the time, and a replica hosts thousands of them: at the
fast pace every idle grain would still cost a tick every 0.5 s and a flush every 2 s.
A grain tickless (``PipelineCore.tickless``) for ``idle_after_s`` drops to one tick
every ``idle_tick_s``; the first message that leaves it with something to do brings the
fast pace back. The wait before slowing down keeps a pipeline between two bursts, or
one whose flush just emptied it, from switching back and forth.

Pure: no clock and no timers. The actor passes in the time and the core's state after
each message, and swaps its periodic timers when the pace changes.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(kw_only=True)
class Pace:
    idle_after_s: float
    #: Ticking at the slow pace now.
    slow: bool = False
    #: Since when (monotonic seconds) the grain has been tickless; None: it is not.
    _quiet_since: float | None = None

    def observe(self, *, tickless: bool, now: float) -> bool:
        """Take the grain's state after a message; True when the pace changes (``slow``
        says to which)."""
        if not tickless:
            self._quiet_since = None
            changed, self.slow = self.slow, False
            return changed
        if self._quiet_since is None:
            self._quiet_since = now
        if self.slow or now - self._quiet_since < self.idle_after_s:
            return False
        self.slow = True
        return True

    def quiet_for(self, now: float) -> float:
        """Seconds the grain has been tickless, as of its last message (0: it is not)."""
        return 0.0 if self._quiet_since is None else now - self._quiet_since

"""Time for the actor runtime: a monotonic clock for production, a fake one for tests.

Every wait in the runtime (idle timeouts, actor timers, ask timeouts, grace periods) goes
through ``Clock.call_later``, so a test moves time with ``FakeClock.advance`` instead of
sleeping, and a timing-dependent test cannot flake on a loaded machine.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import heapq
import itertools
import time
from collections.abc import Callable
from typing import Protocol

_NS = 1_000_000_000


def resolve(future: asyncio.Future[None]) -> None:
    """Complete ``future`` unless something else got there first."""
    if not future.done():
        future.set_result(None)


class Cancellable(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    def now(self) -> float:
        """Monotonic seconds, for deadlines and durations; never a timestamp."""
        ...

    def wall(self) -> dt.datetime:
        """Timezone-aware UTC time, for timestamps that are written down."""
        ...

    def call_later(self, delay_s: float, callback: Callable[[], object]) -> Cancellable:
        """Run ``callback`` on the event loop after ``delay_s`` seconds."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class MonotonicClock:
    """The real clock: the event loop's timers and ``time.monotonic``."""

    def now(self) -> float:
        return time.monotonic()

    def wall(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)

    def call_later(self, delay_s: float, callback: Callable[[], object]) -> Cancellable:
        return asyncio.get_running_loop().call_later(delay_s, callback)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class _FakeHandle:
    __slots__ = ("callback", "cancelled", "deadline_ns")

    def __init__(self, *, deadline_ns: int, callback: Callable[[], object]) -> None:
        self.deadline_ns = deadline_ns
        self.callback: Callable[[], object] | None = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True
        # Drop the callback so a cancelled timer does not keep its actor alive in the heap.
        self.callback = None


class FakeClock:
    """A clock that only moves when a test calls ``advance``.

    Time is kept in integer nanoseconds so that deadlines compare exactly however a test
    splits its advances. ``advance`` runs due callbacks in deadline order, and after each
    deadline lets the event loop run ``settle_rounds`` iterations, so the tasks they woke
    (an actor handling a timer message, say) react, and re-arm their timers, before time
    moves on. A test waiting for a longer chain awaits the effect itself.
    """

    def __init__(
        self,
        *,
        start_s: float = 0.0,
        wall_start: dt.datetime = dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        settle_rounds: int = 50,
    ) -> None:
        self._start_ns = self._now_ns = round(start_s * _NS)
        self._wall_start = wall_start
        self._settle_rounds = settle_rounds
        self._heap: list[tuple[int, int, _FakeHandle]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now_ns / _NS

    def wall(self) -> dt.datetime:
        return self._wall_start + dt.timedelta(microseconds=(self._now_ns - self._start_ns) / 1000)

    def call_later(self, delay_s: float, callback: Callable[[], object]) -> Cancellable:
        if delay_s <= 0:
            # Like the real loop: "now" means soon, without waiting for a test to advance.
            return asyncio.get_running_loop().call_soon(callback)
        handle = _FakeHandle(deadline_ns=self._now_ns + round(delay_s * _NS), callback=callback)
        heapq.heappush(self._heap, (handle.deadline_ns, next(self._seq), handle))
        return handle

    async def sleep(self, seconds: float) -> None:
        woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        handle = self.call_later(seconds, lambda: resolve(woken))
        try:
            await woken
        finally:
            handle.cancel()

    @property
    def pending(self) -> int:
        """How many callbacks are scheduled and not cancelled (timers a test expects gone)."""
        return sum(1 for _, _, handle in self._heap if not handle.cancelled)

    async def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"a clock only moves forward; got advance({seconds})")
        target_ns = self._now_ns + round(seconds * _NS)
        await self.settle()
        while due := self._pop_due(target_ns):
            self._now_ns = max(self._now_ns, due[0].deadline_ns)
            for handle in due:
                if handle.callback is not None:
                    handle.callback()
            await self.settle()
        self._now_ns = target_ns
        await self.settle()

    async def settle(self) -> None:
        """Let the event loop run a bounded number of iterations."""
        for _ in range(self._settle_rounds):
            await asyncio.sleep(0)

    def _pop_due(self, target_ns: int) -> list[_FakeHandle]:
        """All live handles sharing the earliest deadline, if it is not after ``target_ns``."""
        due: list[_FakeHandle] = []
        while self._heap and (self._heap[0][2].cancelled or self._heap[0][0] <= target_ns):
            deadline_ns, _, handle = self._heap[0]
            if due and deadline_ns != due[0].deadline_ns:
                break
            heapq.heappop(self._heap)
            if not handle.cancelled:
                due.append(handle)
        return due

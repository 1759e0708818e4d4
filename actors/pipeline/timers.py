"""The timer heap: a grain's soonest not-yet-due tasks, bounded in count.

Tasks that are not due yet never sit in the ready window (they would hold back ready
ones); they wait here, ordered by ``(due_at, task id)``. Every timer is also a row in the
store (``task_timers``); the heap holds a prefix of the store's order: every timer up to
its ``horizon``, none after it. So 10,000,000 scheduled tasks cost ``capacity`` entries of
memory, and the rest is read back by a cursor from the horizon on when the heap runs low.

One rule keeps the prefix whole: a refill must not run while a timer beyond the horizon
is still waiting for its store write, or the cursor would move past it. The grain flushes
before it refills.

A timer offered with its task (admitted or retried here) keeps the task as its payload,
within ``payload_bytes``: such a timer fires with no store read. Timers refilled from the
store, and those over the byte budget, carry only their key; the grain reads their rows
when they fire.

Pure: no I/O, no clock. The grain passes the time in and does the reads it asks for.
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from actors.pipeline.model import Task

#: A timer's place in the order: (due time, task id).
TimerKey = tuple[dt.datetime, str]
#: A timer taken from the heap: its key, and its task when the heap kept it.
Taken = tuple[TimerKey, "Task | None"]

_EARLIEST = dt.datetime.min.replace(tzinfo=dt.UTC)


@dataclass(kw_only=True)
class TimerHeap:
    capacity: int = 10_000
    #: How many bytes of task data the heap keeps as payloads (the rest: key only).
    payload_bytes: int = 16 * 1024 * 1024
    #: Every stored timer with a key up to here is in memory; None: every one is.
    #: Starts at the earliest key: nothing is loaded yet, the store may hold any.
    horizon: TimerKey | None = (_EARLIEST, "")
    _keys: list[TimerKey] = field(default_factory=list)
    _due: dict[str, dt.datetime] = field(default_factory=dict)
    _payloads: dict[str, Task] = field(default_factory=dict)
    _payload_size: int = 0

    def __post_init__(self) -> None:
        if self.capacity < 2:
            raise ValueError("a timer heap needs a capacity of at least 2")

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._due

    def _within(self, key: TimerKey) -> bool:
        return self.horizon is None or key <= self.horizon

    def offer(self, task_id: str, due_at: dt.datetime, task: Task | None = None) -> bool:
        """Hold a new timer if it falls inside the horizon; False: the store alone keeps it.

        ``task``, when given, is kept as the timer's payload if the byte budget allows.
        When the heap is full the latest timer is let go and the horizon moves in to the
        new latest, so the prefix stays exact.
        """
        self.remove(task_id)
        key = (due_at, task_id)
        if not self._within(key):
            return False
        bisect.insort(self._keys, key)
        self._due[task_id] = due_at
        self._keep(task_id, task)
        if len(self._keys) > self.capacity:
            dropped = self._keys.pop()
            self._forget(dropped[1])
            self.horizon = self._keys[-1]
            return dropped != key
        return True

    def _keep(self, task_id: str, task: Task | None) -> None:
        if task is not None and self._payload_size + task.size <= self.payload_bytes:
            self._payloads[task_id] = task
            self._payload_size += task.size

    def _forget(self, task_id: str) -> Task | None:
        del self._due[task_id]
        payload = self._payloads.pop(task_id, None)
        if payload is not None:
            self._payload_size -= payload.size
        return payload

    def remove(self, task_id: str) -> bool:
        """Forget a timer (its task was cancelled or fired elsewhere)."""
        due_at = self._due.get(task_id)
        if due_at is None:
            return False
        self._forget(task_id)
        index = bisect.bisect_left(self._keys, (due_at, task_id))
        del self._keys[index]
        return True

    @property
    def exhausted(self) -> bool:
        """No timer is held and the store has none beyond the horizon: nothing to fire,
        nothing to refill, until a new timer is offered."""
        return not self._keys and self.horizon is None

    def payload(self, task_id: str) -> Task | None:
        return self._payloads.get(task_id)

    def count_due(self, *, by: dt.datetime) -> int:
        """How many timers held here are due at ``by`` (the heap holds the soonest)."""
        return bisect.bisect_right(self._keys, by, key=lambda key: key[0])

    def next_due(self) -> dt.datetime | None:
        return self._keys[0][0] if self._keys else None

    def pop_due(self, *, wall: dt.datetime, limit: int) -> list[Taken]:
        """Up to ``limit`` timers due at ``wall``, soonest first, taken out of the heap
        with their payloads."""
        end = min(bisect.bisect_right(self._keys, wall, key=lambda key: key[0]), limit)
        fired = self._keys[:end]
        del self._keys[:end]
        return [(key, self._forget(key[1])) for key in fired]

    def put_back(self, taken: Iterable[Taken]) -> None:
        """Timers taken by ``pop_due`` whose firing failed: they are due, and stay first."""
        for (due_at, task_id), task in taken:
            if task_id not in self._due:
                bisect.insort(self._keys, (due_at, task_id))
                self._due[task_id] = due_at
                self._keep(task_id, task)

    @property
    def refill_after(self) -> TimerKey | None:
        """Where the store's next read starts; None: from its first timer."""
        return None if self.horizon == (_EARLIEST, "") else self.horizon

    def wants_refill(self) -> bool:
        """True when the store may hold timers beyond the horizon and the heap is low."""
        return self.horizon is not None and len(self._keys) <= self.capacity // 2

    def refill_room(self) -> int:
        return self.capacity - len(self._keys)

    def refill(self, keys: Iterable[TimerKey], *, limit: int) -> None:
        """Timers read from the store after the horizon, in order, at most ``limit``.

        Fewer than ``limit`` means the store holds no more: the horizon opens.
        """
        if self.horizon is None:
            return
        loaded = sorted(key for key in keys if key > self.horizon)
        for key in loaded:
            if key[1] not in self._due:
                bisect.insort(self._keys, key)
                self._due[key[1]] = key[0]
        if len(loaded) < limit:
            self.horizon = None
        elif loaded:
            self.horizon = loaded[-1]

"""What a flush of a ``TaskBook`` writes (``Flush``), and how the book takes it, learns
that it is durable, or takes it back when it failed (``BookFlushing``): the changes,
results and attempts since the last flush, the leases and held tasks past the write
delay (design D2), and the offsets that are then safe to store.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from actors.pipeline.book_state import BookState
from actors.pipeline.holding import Held
from actors.pipeline.model import TERMINAL, AttemptRecord, Status, TaskChange


@dataclass(frozen=True, kw_only=True)
class Flush:
    """What one flush must write, taken from the book; given back if the write fails."""

    changes: tuple[TaskChange, ...]
    results: tuple[tuple[str, int, bytes], ...]
    #: Attempts that ended without ending their task (kept as history).
    attempts: tuple[AttemptRecord, ...] = ()
    #: The next offset per partition, once this flush is durable (design D2).
    offsets: Mapping[int, int] = field(default_factory=dict)
    #: The held batches this flush writes the last tasks of (their offsets are above).
    released: tuple[Held, ...] = ()

    def __bool__(self) -> bool:
        """Something to write. A flush may release held batches and write nothing: their
        tasks were all stored before, and they have no offsets (the shared topic's)."""
        return bool(self.changes or self.results or self.attempts or self.offsets)


class BookFlushing(BookState):
    """The flushing part of ``TaskBook``."""

    @property
    def dirty(self) -> bool:
        return bool(self._dirty or self._results or self._attempts)

    def take_flush(self, *, now: float = math.inf) -> Flush:
        """What the next flush writes: every change, and tasks held past the write delay
        at monotonic ``now`` (every held task when no time is given: a grain going away);
        with the offsets of the held batches whose tasks are then all written."""
        offsets: dict[int, int] = {}
        released: tuple[Held, ...] = ()
        if self._unwritten_leases:
            self._mark_old_leases(now)
        if self._holding:
            # Held past the delay: written as they are now, queued or leased ("pinned").
            for task in self._holding.due(now=now, delay_s=self.config.write_delay_s):
                if task.id not in self._dirty:
                    self._mark(task)
            inserted = {c.id for c in self._dirty.values() if c.insert is not None}
            offsets, released = self._holding.releasable(inserted)
        flush = Flush(
            changes=tuple(self._dirty.values()),
            results=tuple((tid, attempt, res) for tid, (attempt, res) in self._results.items()),
            attempts=tuple(self._attempts),
            offsets=offsets,
            released=released,
        )
        self._dirty, self._results, self._attempts = {}, {}, []
        self._unwritten_timers.clear()  # written by this flush (or given back if it fails)
        return flush

    def _mark_old_leases(self, now: float) -> None:
        """Leases of stored tasks granted ``write_delay_s`` or longer before ``now`` join
        the flush (a crash before it runs those tasks again: at-least-once)."""
        delay = self.config.write_delay_s
        # From the front (the oldest grant), each taken as it is looked at: a flush costs
        # the leases it writes, not a copy of every lease in flight.
        while self._unwritten_leases:
            task_id, granted = next(iter(self._unwritten_leases.items()))
            if granted + delay > now:
                return
            del self._unwritten_leases[task_id]
            lease = self._leases.get(task_id)
            if lease is not None and task_id not in self._dirty:
                self._mark(lease.task)

    @property
    def unwritten_leases(self) -> bool:
        return bool(self._unwritten_leases)

    def leases_due(self, *, now: float) -> bool:
        """Some lease of a stored task is due to be written at monotonic ``now`` (granted
        ``write_delay_s`` or longer before it). The oldest grant comes first: it alone
        tells, so a grain whose leases are all younger is not flushed for them."""
        oldest = next(iter(self._unwritten_leases.values()), None)
        return oldest is not None and oldest + self.config.write_delay_s <= now

    def flushed(self, flush: Flush) -> None:
        """A flush is durable: the timer rows it ended are no longer the tasks' to end,
        the tasks it inserted have rows, and the batches it released are done with."""
        for change in flush.changes:
            if change.insert is not None:
                change.insert.unwritten = False
                if self._holding.written(change.id):
                    ended = change.status in TERMINAL
                    self.totals["written_once" if ended else "pinned"] += 1
            if change.ended_timer is None:
                continue
            lease = self._leases.get(change.id)
            task = lease.task if lease else self._ready.get(change.id)
            task = task or self.timers.payload(change.id)
            if task is not None and task.timer == change.timer:
                task.timer = None
        self._holding.release(flush.released)

    def restore_flush(self, flush: Flush) -> None:
        """Give back a flush that failed; changes made since then stay newer."""
        for change in flush.changes:
            self._dirty.setdefault(change.id, change)
            if change.status is Status.SCHEDULED and change.id not in self.timers:
                self._unwritten_timers.add(change.id)
        for task_id, attempt, result in flush.results:
            self._results.setdefault(task_id, (attempt, result))
        self._attempts[:0] = flush.attempts

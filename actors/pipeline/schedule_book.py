"""The schedules a grain fires, ordered by their next fire time.

Holds each schedule's definition and state and hands out the ones due, soonest first.
Schedules are few per pipeline next to tasks (a definition and a state each, about a
kilobyte), so all of a pipeline's schedules are held; the timers of their runs are not
(those are ordinary timers, ``timers.py``).

Pure: no I/O, no clock.
"""

from __future__ import annotations

import datetime as dt
import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field

from actors.pipeline.schedules import ScheduleSpec, ScheduleState


@dataclass(kw_only=True)
class ScheduleBook:
    _specs: dict[str, ScheduleSpec] = field(default_factory=dict)
    _states: dict[str, ScheduleState] = field(default_factory=dict)
    #: (next fire time, schedule id); stale entries are skipped when they surface.
    _heap: list[tuple[dt.datetime, str]] = field(default_factory=list)
    #: Schedules holding a buffered fire time, released when their last run ends.
    _buffered: set[str] = field(default_factory=set)

    def __len__(self) -> int:
        return len(self._specs)

    def __contains__(self, schedule_id: object) -> bool:
        return schedule_id in self._specs

    def versions(self) -> dict[str, int]:
        return {sid: spec.version for sid, spec in self._specs.items()}

    def get(self, schedule_id: str) -> tuple[ScheduleSpec, ScheduleState]:
        return self._specs[schedule_id], self._states[schedule_id]

    def put(self, spec: ScheduleSpec, state: ScheduleState) -> None:
        self._specs[spec.id] = spec
        self.update(state)

    def update(self, state: ScheduleState) -> None:
        """A state written to the store (or unchanged): the next fire time is rearmed."""
        sid = state.schedule_id
        self._states[sid] = state
        if state.next_fire_at is not None:
            heapq.heappush(self._heap, (state.next_fire_at, sid))
        if state.buffered_fire_at is not None:
            self._buffered.add(sid)
        else:
            self._buffered.discard(sid)

    def remove(self, schedule_id: str) -> None:
        self._specs.pop(schedule_id, None)
        self._states.pop(schedule_id, None)
        self._buffered.discard(schedule_id)

    def count_due(self, *, by: dt.datetime) -> int:
        """Active schedules whose next fire time comes by ``by`` (for scaling ahead)."""
        specs = self._specs
        return sum(
            1
            for sid, state in self._states.items()
            if state.next_fire_at is not None and state.next_fire_at <= by and not specs[sid].paused
        )

    @property
    def buffered(self) -> bool:
        """Whether a schedule holds a buffered run (released by the periodic tick once its
        predecessor has ended)."""
        return bool(self._buffered)

    def next_due(self) -> dt.datetime | None:
        """The soonest next fire time of an active schedule."""
        self._drop_stale()
        return self._heap[0][0] if self._heap else None

    def take_due(self, *, wall: dt.datetime, limit: int) -> list[str]:
        """Schedules with a fire time due at ``wall`` or a buffered run, at most ``limit``.

        A taken schedule leaves the heap until ``update`` puts it back with its new state
        (also when the write failed: the caller puts back the old state).
        """
        taken: list[str] = []
        self._drop_stale()
        while self._heap and self._heap[0][0] <= wall and len(taken) < limit:
            _, sid = heapq.heappop(self._heap)
            if sid not in taken:
                taken.append(sid)
            self._drop_stale()
        for sid in sorted(self._buffered):
            if len(taken) >= limit:
                break
            if sid not in taken:
                taken.append(sid)
        return taken

    def restore(self, schedule_ids: Iterable[str]) -> None:
        """Put taken schedules back unchanged (their firing was not written)."""
        for sid in schedule_ids:
            state = self._states.get(sid)
            if state is not None:
                self.update(state)

    def _drop_stale(self) -> None:
        while self._heap:
            at, sid = self._heap[0]
            state = self._states.get(sid)
            if state is not None and state.next_fire_at == at:
                return
            heapq.heappop(self._heap)

"""Tasks a grain holds in memory without a row (the write delay, design D2), by the
admitted batch they came in: which of them a flush must write now, and which offsets
(or which shared-topic forwarders' batches) that flush then releases.

Pure bookkeeping for ``TaskBook``: no I/O, no clock (the time is passed in).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from actors.pipeline.model import Task


@dataclass(kw_only=True)
class Held:
    """An admitted batch of records some of whose tasks have no row yet: its offsets are
    stored only once every task of it, and of the batches before it, is."""

    since: float
    offsets: Mapping[int, int]
    unwritten: set[str]
    #: A shared topic's forwarder, told once it is released (``AdmitBatch.on_written``).
    on_written: Callable[[], None] | None = None


@dataclass(kw_only=True)
class Holding:
    _batches: deque[Held] = field(default_factory=deque)
    _of: dict[str, tuple[Held, Task]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        """Offsets wait to be stored (with tasks not written yet, or after them)."""
        return bool(self._batches)

    def hold(
        self,
        tasks: Sequence[Task],
        offsets: Mapping[int, int],
        *,
        now: float,
        on_written: Callable[[], None] | None,
    ) -> None:
        held = Held(
            since=now,
            offsets=dict(offsets),
            unwritten={t.id for t in tasks},
            on_written=on_written,
        )
        self._batches.append(held)
        for task in tasks:
            self._of[task.id] = (held, task)

    def task(self, task_id: str) -> Task | None:
        found = self._of.get(task_id)
        return found[1] if found is not None else None

    def due(self, *, now: float, delay_s: float) -> Iterator[Task]:
        """The tasks still without a row of the batches held ``delay_s`` or longer."""
        for held in self._batches:
            if held.since + delay_s > now:
                return
            for task_id in held.unwritten:
                yield self._of[task_id][1]

    def releasable(self, inserted: set[str]) -> tuple[dict[int, int], tuple[Held, ...]]:
        """The offsets, and the batches, that a flush inserting ``inserted`` releases: the
        first batches whose tasks it writes to the last."""
        offsets: dict[int, int] = {}
        released: list[Held] = []
        for held in self._batches:
            if not held.unwritten <= inserted:
                break
            offsets.update(held.offsets)
            released.append(held)
        return offsets, tuple(released)

    def written(self, task_id: str) -> bool:
        """A durable flush inserted the task: True if it was held (its first write)."""
        found = self._of.pop(task_id, None)
        if found is None:
            return False
        found[0].unwritten.discard(task_id)
        return True

    def release(self, released: Sequence[Held]) -> None:
        """A durable flush released these batches (``releasable``); their forwarders on
        the shared topic are told."""
        for held in released:
            if self._batches and self._batches[0] is held:
                self._batches.popleft()
            if held.on_written is not None:
                held.on_written()

"""The state of a ``TaskBook`` (``book.py``): its fields, and the steps every part of it
takes (a change marked for the next flush, a count moved, a task ended, a task taken from
the window).

The book's parts are classes over this one: what a flush writes (``book_flush.py``), how
tasks end other than by a worker's report (``book_endings.py``), and the window, polls
and reports, in ``TaskBook`` itself. Pure state, like the book: no I/O, no clock.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, OrderedDict
from dataclasses import dataclass, field

from actors.pipeline.holding import Holding
from actors.pipeline.model import (
    AttemptRecord,
    LeaseToken,
    PipelineConfig,
    Status,
    Task,
    TaskChange,
)
from actors.pipeline.timers import TimerHeap


@dataclass(kw_only=True)
class Lease:
    """A task handed to a worker, as the book keeps it until it ends or runs out."""

    task: Task
    token: LeaseToken
    deadline: float
    cancel_requested: bool = False


@dataclass(kw_only=True)
class BookState:
    """What a ``TaskBook`` holds; its parts (``book_flush.py``, ``book_endings.py`` and
    ``TaskBook``) are classes over this one, so each sees all of it."""

    config: PipelineConfig
    epoch: int
    counts: Counter[Status] = field(default_factory=Counter)
    #: Monotonic totals for metrics: admitted, dispatched, retried, dead, ...
    totals: Counter[str] = field(default_factory=Counter)
    #: Queued tasks that are in the store but not in the window.
    stored_backlog: int = 0
    #: Paging cursor over the store's queued tasks (ordered by id).
    page_after: str = ""
    #: Tasks not due yet (the soonest of them; the store keeps the rest).
    timers: TimerHeap = field(init=False)
    _ready: OrderedDict[str, Task] = field(default_factory=OrderedDict)
    _ready_bytes: int = 0
    #: Ready tasks with a deadline (``expires_at``): the sweep and ``tickless`` look at
    #: the window only when there are any.
    _ready_deadlines: int = 0
    _leases: dict[str, Lease] = field(default_factory=dict)
    _dirty: dict[str, TaskChange] = field(default_factory=dict)
    _results: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    #: Recently finished grants by task id: (epoch << 32) | attempt (``book._grant``).
    _finished: OrderedDict[str, int] = field(default_factory=OrderedDict)
    #: Retries whose timer the heap did not keep and whose row is not written yet: the
    #: heap must not read further from the store until they are (``timers.py``).
    _unwritten_timers: set[str] = field(default_factory=set)
    _attempts: list[AttemptRecord] = field(default_factory=list)
    #: Admitted batches, in order, whose offsets wait for their tasks' first writes (D2).
    _holding: Holding = field(default_factory=Holding)
    #: Leases of stored tasks not written yet, by task id, at the monotonic time of their
    #: grant, oldest first (D2: a change is written once older than the write delay; a
    #: task that ends sooner is updated once, at its end).
    _unwritten_leases: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.timers = TimerHeap(capacity=self.config.timer_heap)

    # -- the steps every part takes -----------------------------------------------------

    def _mark(self, task: Task) -> None:
        self._dirty[task.id] = TaskChange.of(task, retention_s=self.config.retention_s)

    def _move(self, old: Status, new: Status, count: int = 1) -> None:
        self.counts[old] -= count
        self.counts[new] += count

    def _finish(self, task: Task, status: Status, *, wall: dt.datetime, error: str | None) -> None:
        task.status, task.finished_at, task.error = status, wall, error
        self.totals[status.value] += 1
        self._mark(task)

    def _take_ready(self, task_id: str) -> Task:
        task = self._ready.pop(task_id)
        self._ready_bytes -= task.size
        self._ready_deadlines -= task.expires_at is not None
        return task

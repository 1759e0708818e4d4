"""What the pipeline grain needs from the outside world, as protocols.

``services/`` implements them over TiDB/SQLite and Kafka; unit tests use in-memory ones.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from actors.pipeline.book_flush import Flush
from actors.pipeline.events import EventBatch
from actors.pipeline.model import GrainKey, NewTask, Purge, Status, Task
from actors.pipeline.schedules import ScheduleSpec, ScheduleState
from actors.pipeline.timers import TimerKey


class StaleEpoch(Exception):
    """Another incarnation owns the grain now: this one must drop its state and stop."""


class StoreUnavailable(Exception):
    """The store cannot be reached; the caller keeps its data and retries later."""


@dataclass(frozen=True, kw_only=True)
class Loaded:
    counts: dict[Status, int]
    leased: list[Task]
    #: Next offset to admit, per partition of the pipeline's topic.
    offsets: dict[int, int]


@dataclass(frozen=True, kw_only=True)
class Activation:
    """What a grain starts from, read with its claim in one transaction."""

    epoch: int
    loaded: Loaded
    schedules: list[StoredSchedule]
    #: The first stored timers, in order, at most the number asked for.
    timers: list[TimerKey]


@dataclass(frozen=True, kw_only=True)
class Admission:
    admitted: list[Task]
    #: Ids already stored with the same data: an idempotent resubmit.
    duplicates: list[str] = field(default_factory=list)
    #: Ids already stored with different data: the first submit stands.
    conflicts: list[str] = field(default_factory=list)
    #: Tasks the store cancelled (queued, beyond the window) from cancel events.
    cancelled: int = 0


@dataclass(frozen=True, kw_only=True)
class StoredSchedule:
    """A schedule's definition (the API's) and its firing state (the grain's, if any)."""

    spec: ScheduleSpec
    state: ScheduleState | None


class TaskStore(Protocol):
    """Every call names its grain by key; the store keeps its rows under ``str(grain)``."""

    async def claim(self, *, grain: GrainKey, owner: str) -> int:
        """Become the grain's owner: increment and return its epoch."""
        ...

    async def load(self, *, grain: GrainKey) -> Loaded: ...

    async def activate(self, *, grain: GrainKey, owner: str, timers: int) -> Activation:
        """``claim``, ``load``, ``load_schedules`` and the first ``timers`` of
        ``page_timers`` in one transaction: a replica activating thousands of grains
        pays one round of the store per grain, not four."""
        ...

    async def rest(self, *, grain: GrainKey, epoch: int, wake_at: dt.datetime) -> None:
        """Record, fenced by ``epoch``, that the grain deactivates with timers or
        schedules and must be active again at ``wake_at`` (the wake-up index, design D4);
        its next claim clears it. StaleEpoch if another owner claimed it since."""
        ...

    async def admit(
        self,
        *,
        grain: GrainKey,
        epoch: int,
        tasks: Sequence[NewTask],
        offsets: Mapping[int, int],
        now: dt.datetime,
        schedules: Sequence[ScheduleState] = (),
        dropped_schedules: Sequence[str] = (),
    ) -> Admission:
        """Insert new task rows, record the next offsets and write the schedule states
        (a schedule's runs and its next fire time), in one fenced transaction."""
        ...

    async def load_schedules(
        self, *, grain: GrainKey, ids: Sequence[str] | None = None
    ) -> list[StoredSchedule]:
        """The pipeline's schedules (or those of ``ids`` that still exist)."""
        ...

    async def schedule_versions(self, *, grain: GrainKey) -> dict[str, int]:
        """Every schedule of the pipeline and its definition's version."""
        ...

    async def run_statuses(self, *, grain: GrainKey, task_ids: Sequence[str]) -> dict[str, Status]:
        """The stored status of these tasks (absent: no row)."""
        ...

    async def cancel_waiting(
        self,
        *,
        grain: GrainKey,
        epoch: int,
        task_ids: Sequence[str],
        now: dt.datetime,
        retention_s: float,
    ) -> dict[Status, int]:
        """Cancel rows the grain does not hold in memory that are still waiting (queued or
        scheduled, their timer rows with them); return how many had each status."""
        ...

    async def requeue_dead(
        self,
        *,
        grain: GrainKey,
        epoch: int,
        task_ids: Sequence[str],
        now: dt.datetime,
    ) -> list[Task]:
        """Put dead rows back to queued with attempt 1; return them."""
        ...

    async def purge_dead(
        self, *, grain: GrainKey, epoch: int, purges: Sequence[Purge], now: dt.datetime
    ) -> int:
        """Delete the named rows that are dead and finished before their purge's time, with
        their results and attempt history; return how many tasks went."""
        ...

    async def page_queued(self, *, grain: GrainKey, after: str, limit: int) -> list[Task]: ...

    async def stored_digests(self, *, grain: GrainKey, task_ids: Sequence[str]) -> dict[str, bytes]:
        """The data digest of each of these tasks that has a row: an admission that holds
        its tasks in memory (the write delay, design D2) tells replays and resubmits by it."""
        ...

    async def page_timers(
        self, *, grain: GrainKey, after: TimerKey | None, limit: int
    ) -> list[TimerKey]:
        """Stored timers in ``(due_at, task id)`` order after ``after`` (None: from the first)."""
        ...

    async def fire_timers(
        self, *, grain: GrainKey, epoch: int, timers: Sequence[TimerKey], now: dt.datetime
    ) -> list[Task]:
        """Read the tasks of these due timers that are still ``scheduled``, in a fenced
        read, as queued. Nothing else is written: their rows stay ``scheduled`` and their
        timer rows stay until the flush that writes their next state ends them (a crash
        before then fires them again). A timer whose task is no longer scheduled is stale
        and is deleted."""
        ...

    async def flush(
        self,
        *,
        grain: GrainKey,
        epoch: int,
        flush: Flush,
        stats: Mapping[str, int],
        now: dt.datetime,
    ) -> None:
        """Write the changes (inserting the tasks that have no row yet), results, counters
        and the flush's offsets in one fenced transaction."""
        ...


class EventSink(Protocol):
    """Where the grain publishes what its committed writes changed (D6, live results).

    ``publish`` must neither block nor raise: a lost event only delays a waiter to its
    timeout, while a flush held up by Kafka would hold up every worker's report.
    """

    def publish(self, batch: EventBatch) -> None: ...

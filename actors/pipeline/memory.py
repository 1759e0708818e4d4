"""An in-memory ``TaskStore`` for unit tests: same fencing and idempotency rules, no I/O.

It keeps the same contract as the SQL store (``tests/ports/task_store.py`` runs against
both), so a unit test over it shows what the real store would do.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import Counter
from collections.abc import Mapping, Sequence

from actors.pipeline.book_flush import Flush
from actors.pipeline.events import EventBatch
from actors.pipeline.model import AttemptRecord, GrainKey, NewTask, Purge, Status, Task
from actors.pipeline.ports import (
    Activation,
    Admission,
    Loaded,
    StaleEpoch,
    StoredSchedule,
    StoreUnavailable,
)
from actors.pipeline.schedules import ScheduleSpec, ScheduleState
from actors.pipeline.timers import TimerKey


class InMemoryTaskStore:
    def __init__(self) -> None:
        self.epochs: dict[GrainKey, int] = {}
        self.owners: dict[GrainKey, str] = {}
        self.rows: dict[tuple[str, str], Task] = {}
        self.digests: dict[tuple[str, str], bytes] = {}
        self.results: dict[tuple[str, str], bytes] = {}
        self.offsets: dict[GrainKey, dict[int, int]] = {}
        #: Attempts kept as history: (pipeline, task id, attempt) -> the record.
        self.attempts: dict[tuple[str, str, int], AttemptRecord] = {}
        #: Timer rows by pipeline: (due_at, task id).
        self.timers: dict[str, set[TimerKey]] = {}
        self.stats: dict[str, dict[str, int]] = {}
        #: Schedule definitions (the API's) and states (the grain's), by pipeline and id.
        self.schedules: dict[str, dict[str, ScheduleSpec]] = {}
        self.schedule_states: dict[str, dict[str, ScheduleState]] = {}
        #: Set to make every call fail as if the database were down.
        self.down = False
        #: The wake-up index: grains resting with timers or schedules, and when they wake.
        self.wakeups: dict[GrainKey, dt.datetime] = {}
        #: Calls of ``activate``.
        self.activations = 0

    def _check(self, grain: GrainKey | None = None, epoch: int | None = None) -> None:
        if self.down:
            raise StoreUnavailable("the in-memory store is down")
        if grain is not None and self.epochs.get(grain) != epoch:
            raise StaleEpoch(f"grain {grain} is no longer at epoch {epoch}")

    async def claim(self, *, grain: GrainKey, owner: str) -> int:
        self._check()
        self.wakeups.pop(grain, None)
        self.epochs[grain] = self.epochs.get(grain, 0) + 1
        self.owners[grain] = owner
        return self.epochs[grain]

    async def rest(self, *, grain: GrainKey, epoch: int, wake_at: dt.datetime) -> None:
        self._check(grain, epoch)
        self.wakeups[grain] = wake_at

    async def load(self, *, grain: GrainKey) -> Loaded:
        self._check()
        mine = [t for (p, _), t in self.rows.items() if p == grain.pipeline_id]
        return Loaded(
            counts=dict(Counter(t.status for t in mine)),
            leased=[dataclasses.replace(t) for t in mine if t.status is Status.LEASED],
            offsets=dict(self.offsets.get(grain, {})),
        )

    async def activate(self, *, grain: GrainKey, owner: str, timers: int) -> Activation:
        self._check()
        self.activations += 1
        return Activation(
            epoch=await self.claim(grain=grain, owner=owner),
            loaded=await self.load(grain=grain),
            schedules=await self.load_schedules(grain=grain),
            timers=await self.page_timers(grain=grain, after=None, limit=timers),
        )

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
        self._check(grain, epoch)
        pipeline_id = grain.pipeline_id
        admitted: list[Task] = []
        duplicates: list[str] = []
        conflicts: list[str] = []
        unique: dict[str, NewTask] = {}
        for new in tasks:
            unique.setdefault(new.id, new)  # a resubmit inside the batch: the first stands
        for new in unique.values():
            key = (pipeline_id, new.id)
            if key in self.digests:
                same = self.digests[key] == new.data_sha256
                (duplicates if same else conflicts).append(new.id)
                continue
            later = new.due_at > now
            if later:
                self.timers.setdefault(pipeline_id, set()).add((new.due_at, new.id))
            task = Task.admitted(new, status=Status.SCHEDULED if later else Status.QUEUED)
            self.rows[key], self.digests[key] = dataclasses.replace(task), new.data_sha256
            admitted.append(task)
        self.offsets.setdefault(grain, {}).update(offsets)
        states = self.schedule_states.setdefault(pipeline_id, {})
        for state in schedules:
            states[state.schedule_id] = state
        for schedule_id in dropped_schedules:
            states.pop(schedule_id, None)
        return Admission(admitted=admitted, duplicates=duplicates, conflicts=conflicts)

    async def cancel_waiting(
        self,
        *,
        grain: GrainKey,
        epoch: int,
        task_ids: Sequence[str],
        now: dt.datetime,
        retention_s: float,
    ) -> dict[Status, int]:
        self._check(grain, epoch)
        pipeline_id = grain.pipeline_id
        done: Counter[Status] = Counter()
        for task_id in task_ids:
            row = self.rows.get((pipeline_id, task_id))
            if row is not None and row.status in (Status.QUEUED, Status.SCHEDULED):
                if row.status is Status.SCHEDULED:
                    self.timers.get(pipeline_id, set()).discard((row.due_at, task_id))
                done[row.status] += 1
                row.status, row.error, row.finished_at = Status.CANCELLED, "cancelled", now
        return dict(done)

    async def purge_dead(
        self, *, grain: GrainKey, epoch: int, purges: Sequence[Purge], now: dt.datetime
    ) -> int:
        self._check(grain, epoch)
        gone = 0
        for purge in purges:
            key = (grain.pipeline_id, purge.task_id)
            row = self.rows.get(key)
            finished = row.finished_at if row is not None else None
            if row is None or row.status is not Status.DEAD or finished is None:
                continue
            if finished < purge.finished_before:
                del self.rows[key]
                self.digests.pop(key, None)
                self.results.pop(key, None)
                for attempt_key in [k for k in self.attempts if k[:2] == key]:
                    del self.attempts[attempt_key]
                gone += 1
        return gone

    async def requeue_dead(
        self,
        *,
        grain: GrainKey,
        epoch: int,
        task_ids: Sequence[str],
        now: dt.datetime,
    ) -> list[Task]:
        self._check(grain, epoch)
        pipeline_id = grain.pipeline_id
        out = []
        for task_id in task_ids:
            row = self.rows.get((pipeline_id, task_id))
            if row is not None and row.status is Status.DEAD:
                row.status, row.attempt, row.error = Status.QUEUED, 1, None
                row.started_at = row.finished_at = None
                row.worker, row.lease_epoch = None, None
                out.append(dataclasses.replace(row))
        return out

    async def stored_digests(self, *, grain: GrainKey, task_ids: Sequence[str]) -> dict[str, bytes]:
        self._check()
        keys = ((tid, (grain.pipeline_id, tid)) for tid in task_ids)
        return {tid: self.digests[key] for tid, key in keys if key in self.digests}

    async def page_queued(self, *, grain: GrainKey, after: str, limit: int) -> list[Task]:
        self._check()
        pipeline_id = grain.pipeline_id
        queued = sorted(
            (
                t
                for (p, tid), t in self.rows.items()
                if p == pipeline_id and t.status is Status.QUEUED and tid > after
            ),
            key=lambda t: t.id,
        )
        return [dataclasses.replace(t) for t in queued[:limit]]

    async def page_timers(
        self, *, grain: GrainKey, after: TimerKey | None, limit: int
    ) -> list[TimerKey]:
        self._check()
        mine = sorted(self.timers.get(grain.pipeline_id, set()))
        return [key for key in mine if after is None or key > after][:limit]

    async def fire_timers(
        self, *, grain: GrainKey, epoch: int, timers: Sequence[TimerKey], now: dt.datetime
    ) -> list[Task]:
        self._check(grain, epoch)
        pipeline_id = grain.pipeline_id
        fired = []
        for key in timers:
            row = self.rows.get((pipeline_id, key[1]))
            if row is not None and row.status is Status.SCHEDULED:
                fired.append(dataclasses.replace(row, status=Status.QUEUED))
            else:
                self.timers.get(pipeline_id, set()).discard(key)  # stale: ends now
        return fired

    async def flush(
        self,
        *,
        grain: GrainKey,
        epoch: int,
        flush: Flush,
        stats: Mapping[str, int],
        now: dt.datetime,
    ) -> None:
        self._check(grain, epoch)
        pipeline_id = grain.pipeline_id
        for change in flush.changes:
            key = (pipeline_id, change.id)
            if change.insert is not None and key not in self.rows:
                self.rows[key] = dataclasses.replace(change.insert, unwritten=False)
                self.digests[key] = change.insert.data_sha256 or b""
            row = self.rows[key]
            row.attempt, row.status, row.worker = change.attempt, change.status, change.worker
            row.due_at = change.due_at
            if change.status is Status.SCHEDULED:
                self.timers.setdefault(pipeline_id, set()).add((change.due_at, change.id))
            if change.ended_timer is not None:
                self.timers.get(pipeline_id, set()).discard(change.ended_timer)
            row.started_at, row.finished_at = change.started_at, change.finished_at
            row.error, row.lease_epoch = change.error, change.lease_epoch
        for task_id, _attempt, result in flush.results:
            self.results[(pipeline_id, task_id)] = result
        for record in flush.attempts:
            self.attempts[(pipeline_id, record.task_id, record.attempt)] = record
        self.stats[pipeline_id] = dict(stats)
        self.offsets.setdefault(grain, {}).update(flush.offsets)

    async def load_schedules(
        self, *, grain: GrainKey, ids: Sequence[str] | None = None
    ) -> list[StoredSchedule]:
        self._check()
        specs = self.schedules.get(grain.pipeline_id, {})
        states = self.schedule_states.get(grain.pipeline_id, {})
        wanted = specs if ids is None else [i for i in ids if i in specs]
        return [StoredSchedule(spec=specs[i], state=states.get(i)) for i in wanted]

    async def schedule_versions(self, *, grain: GrainKey) -> dict[str, int]:
        self._check()
        return {i: s.version for i, s in self.schedules.get(grain.pipeline_id, {}).items()}

    async def run_statuses(self, *, grain: GrainKey, task_ids: Sequence[str]) -> dict[str, Status]:
        self._check()
        rows = ((tid, self.rows.get((grain.pipeline_id, tid))) for tid in task_ids)
        return {tid: row.status for tid, row in rows if row is not None}


class InMemoryEventSink:
    """The ``EventSink`` for unit tests: keeps every batch in order."""

    def __init__(self) -> None:
        self.batches: list[EventBatch] = []

    def publish(self, batch: EventBatch) -> None:
        self.batches.append(batch)

    def changes(self) -> list[tuple[str, str, int]]:
        """Every published change as (task id, status, attempt), in order."""
        return [(c.task_id, c.status, c.attempt) for b in self.batches for c in b.changes]

"""An in-memory ``TaskStore`` for unit tests: same fencing and idempotency rules, no I/O."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import Counter
from collections.abc import Mapping, Sequence

from actors.pipeline.book import Flush
from actors.pipeline.model import NewTask, Status, Task
from actors.pipeline.ports import Admission, Loaded, StaleEpoch, StoreUnavailable


class InMemoryTaskStore:
    def __init__(self) -> None:
        self.epochs: dict[str, int] = {}
        self.owners: dict[str, str] = {}
        self.rows: dict[tuple[str, str], Task] = {}
        self.digests: dict[tuple[str, str], bytes] = {}
        self.results: dict[tuple[str, str], bytes] = {}
        self.offsets: dict[str, dict[int, int]] = {}
        self.stats: dict[str, dict[str, int]] = {}
        #: Set to make every call fail as if the database were down.
        self.down = False

    def _check(self, grain_id: str | None = None, epoch: int | None = None) -> None:
        if self.down:
            raise StoreUnavailable("the in-memory store is down")
        if grain_id is not None and self.epochs.get(grain_id) != epoch:
            raise StaleEpoch(f"{grain_id} is no longer at epoch {epoch}")

    async def claim(self, *, grain_id: str, owner: str) -> int:
        self._check()
        self.epochs[grain_id] = self.epochs.get(grain_id, 0) + 1
        self.owners[grain_id] = owner
        return self.epochs[grain_id]

    async def load(self, *, grain_id: str, pipeline_id: str) -> Loaded:
        self._check()
        mine = [t for (p, _), t in self.rows.items() if p == pipeline_id]
        return Loaded(
            counts=dict(Counter(t.status for t in mine)),
            leased=[dataclasses.replace(t) for t in mine if t.status is Status.LEASED],
            offsets=dict(self.offsets.get(grain_id, {})),
        )

    async def admit(
        self,
        *,
        grain_id: str,
        epoch: int,
        pipeline_id: str,
        tasks: Sequence[NewTask],
        offsets: Mapping[int, int],
        now: dt.datetime,
    ) -> Admission:
        self._check(grain_id, epoch)
        admitted: list[Task] = []
        duplicates: list[str] = []
        conflicts: list[str] = []
        for new in tasks:
            key = (pipeline_id, new.id)
            if key in self.digests:
                same = self.digests[key] == new.data_sha256
                (duplicates if same else conflicts).append(new.id)
                continue
            task = Task(
                id=new.id,
                attempt=1,
                status=Status.QUEUED,
                data=new.data,
                due_at=new.due_at,
                created_at=new.created_at,
            )
            self.rows[key], self.digests[key] = dataclasses.replace(task), new.data_sha256
            admitted.append(task)
        self.offsets.setdefault(grain_id, {}).update(offsets)
        return Admission(admitted=admitted, duplicates=duplicates, conflicts=conflicts)

    async def cancel_queued(
        self,
        *,
        grain_id: str,
        epoch: int,
        pipeline_id: str,
        task_ids: Sequence[str],
        now: dt.datetime,
        retention_s: float,
    ) -> int:
        self._check(grain_id, epoch)
        done = 0
        for task_id in task_ids:
            row = self.rows.get((pipeline_id, task_id))
            if row is not None and row.status is Status.QUEUED:
                row.status, row.finished_at, done = Status.CANCELLED, now, done + 1
        return done

    async def requeue_dead(
        self,
        *,
        grain_id: str,
        epoch: int,
        pipeline_id: str,
        task_ids: Sequence[str],
        now: dt.datetime,
    ) -> list[Task]:
        self._check(grain_id, epoch)
        out = []
        for task_id in task_ids:
            row = self.rows.get((pipeline_id, task_id))
            if row is not None and row.status is Status.DEAD:
                row.status, row.attempt, row.error, row.finished_at = Status.QUEUED, 1, None, None
                out.append(dataclasses.replace(row))
        return out

    async def page_queued(self, *, pipeline_id: str, after: str, limit: int) -> list[Task]:
        self._check()
        queued = sorted(
            (
                t
                for (p, tid), t in self.rows.items()
                if p == pipeline_id and t.status is Status.QUEUED and tid > after
            ),
            key=lambda t: t.id,
        )
        return [dataclasses.replace(t) for t in queued[:limit]]

    async def flush(
        self,
        *,
        grain_id: str,
        epoch: int,
        pipeline_id: str,
        flush: Flush,
        stats: Mapping[str, int],
        now: dt.datetime,
    ) -> None:
        self._check(grain_id, epoch)
        for change in flush.changes:
            row = self.rows[(pipeline_id, change.id)]
            row.attempt, row.status, row.worker = change.attempt, change.status, change.worker
            row.started_at, row.finished_at = change.started_at, change.finished_at
            row.error, row.lease_epoch = change.error, change.lease_epoch
        for task_id, _attempt, result in flush.results:
            self.results[(pipeline_id, task_id)] = result
        self.stats[pipeline_id] = dict(stats)

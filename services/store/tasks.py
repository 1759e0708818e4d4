"""The pipeline grain's store over SQLAlchemy: TiDB in production, SQLite in development.

Every write a grain makes runs in one transaction that first checks the grain's epoch
(fencing): an ex-owner that was paused while its grain moved finds the epoch changed and
writes nothing. SQLAlchemy here is synchronous (pymysql); calls run in worker threads.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar, cast

import sqlalchemy as sa

from actors.pipeline.book import Flush
from actors.pipeline.model import GrainKey, NewTask, Purge, Status, Task
from actors.pipeline.ports import (
    Admission,
    Loaded,
    StaleEpoch,
    StoredSchedule,
    StoreUnavailable,
)
from actors.pipeline.retry import Backoff, RetryOverride
from actors.pipeline.schedules import ScheduleState
from actors.pipeline.timers import TimerKey
from services.store import schedule_rows
from services.store.schema import (
    grain_offsets,
    grain_owners,
    pipeline_stats,
    task_attempts,
    task_results,
    task_timers,
    tasks,
)
from services.store.sql import chunks, from_db, from_db_required, to_db, upsert
from services.store.types import Timestamp

log = logging.getLogger("wsched.store.tasks")
R = TypeVar("R")

_TASK_COLUMNS = (
    tasks.c.id,
    tasks.c.attempt,
    tasks.c.status,
    tasks.c.data,
    tasks.c.due_at,
    tasks.c.created_at,
    tasks.c.started_at,
    tasks.c.finished_at,
    tasks.c.worker,
    tasks.c.error,
    tasks.c.lease_epoch,
    tasks.c.expires_at,
    tasks.c.policy_json,
    tasks.c.schedule_id,
    tasks.c.fire_at,
)
_MUTABLE = (
    "attempt",
    "status",
    "started_at",
    "finished_at",
    "worker",
    "error",
    "lease_epoch",
    "expire_at",
    "updated_at",
    # A retry's backoff moves the next attempt's due time (design D1).
    "due_at",
)


def _task(row: sa.Row[*tuple[Any, ...]]) -> Task:
    retry, timeout_s = policy_from_json(row.policy_json)
    return Task(
        id=row.id,
        attempt=row.attempt,
        status=Status(row.status),
        data=row.data,
        due_at=from_db_required(row.due_at),
        created_at=from_db_required(row.created_at),
        started_at=from_db(row.started_at),
        finished_at=from_db(row.finished_at),
        worker=row.worker,
        error=row.error,
        lease_epoch=row.lease_epoch,
        expires_at=from_db(row.expires_at),
        retry=retry,
        execution_timeout_s=timeout_s,
        schedule_id=row.schedule_id,
        fire_at=from_db(row.fire_at),
    )


def fence(conn: sa.Connection, *, grain: GrainKey, epoch: int, now: dt.datetime) -> None:
    """Fail with StaleEpoch unless ``epoch`` is still the grain's; locks the owner row."""
    touched = conn.execute(
        sa.update(grain_owners)
        .where(grain_owners.c.grain_id == str(grain), grain_owners.c.epoch == epoch)
        .values(updated_at=to_db(now))
    )
    if touched.rowcount != 1:
        raise StaleEpoch(f"grain {grain} is no longer at epoch {epoch}")


class SqlTaskStore:
    """Implements ``actors.pipeline.ports.TaskStore``."""

    def __init__(self, *, engine: sa.Engine, clock: Callable[[], dt.datetime]) -> None:
        self._engine = engine
        self._clock = clock

    async def _run(self, fn: Callable[[sa.Connection], R]) -> R:
        def in_transaction() -> R:
            with self._engine.begin() as conn:
                return fn(conn)

        try:
            return await asyncio.to_thread(in_transaction)
        except (sa.exc.OperationalError, sa.exc.InterfaceError) as err:
            raise StoreUnavailable(str(err.orig or err)) from err

    async def claim(self, *, grain: GrainKey, owner: str) -> int:
        now = to_db(self._clock())
        grain_id = str(grain)

        def claim(conn: sa.Connection) -> int:
            bumped = conn.execute(
                sa.update(grain_owners)
                .where(grain_owners.c.grain_id == grain_id)
                .values(epoch=grain_owners.c.epoch + 1, owner=owner, updated_at=now)
            )
            if bumped.rowcount == 0:
                conn.execute(
                    sa.insert(grain_owners).values(
                        grain_id=grain_id, epoch=1, owner=owner, updated_at=now
                    )
                )
            return int(
                conn.execute(
                    sa.select(grain_owners.c.epoch).where(grain_owners.c.grain_id == grain_id)
                ).scalar_one()
            )

        for _ in range(3):
            try:
                return await self._run(claim)
            except sa.exc.IntegrityError:
                continue  # another replica inserted the first row at the same moment
        raise StoreUnavailable(f"could not claim grain {grain}: repeated conflicts")

    async def load(self, *, grain: GrainKey) -> Loaded:
        pipeline_id = grain.pipeline_id

        def load(conn: sa.Connection) -> Loaded:
            counts = conn.execute(
                sa.select(tasks.c.status, sa.func.count())
                .where(tasks.c.pipeline_id == pipeline_id)
                .group_by(tasks.c.status)
            ).all()
            leased = conn.execute(
                sa.select(*_TASK_COLUMNS).where(
                    tasks.c.pipeline_id == pipeline_id, tasks.c.status == Status.LEASED.value
                )
            ).all()
            offsets = conn.execute(
                sa.select(grain_offsets.c.topic_partition, grain_offsets.c.next_offset).where(
                    grain_offsets.c.grain_id == str(grain)
                )
            ).all()
            return Loaded(
                counts={Status(status): int(n) for status, n in counts},
                leased=[_task(row) for row in leased],
                offsets={int(p): int(o) for p, o in offsets},
            )

        return await self._run(load)

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
        def admit(conn: sa.Connection) -> Admission:
            fence(conn, grain=grain, epoch=epoch, now=now)
            admission = _insert_new(conn, pipeline_id=grain.pipeline_id, batch=tasks, now=now)
            _save_offsets(conn, grain=grain, offsets=offsets)
            if schedules or dropped_schedules:
                schedule_rows.write(
                    conn,
                    pipeline_id=grain.pipeline_id,
                    states=schedules,
                    dropped=dropped_schedules,
                    now=now,
                )
            return admission

        return await self._run(admit)

    async def load_schedules(
        self, *, grain: GrainKey, ids: Sequence[str] | None = None
    ) -> list[StoredSchedule]:
        pipeline_id = grain.pipeline_id
        return await self._run(lambda c: schedule_rows.load(c, pipeline_id=pipeline_id, ids=ids))

    async def schedule_versions(self, *, grain: GrainKey) -> dict[str, int]:
        pipeline_id = grain.pipeline_id
        return await self._run(lambda c: schedule_rows.versions(c, pipeline_id=pipeline_id))

    async def run_statuses(self, *, grain: GrainKey, task_ids: Sequence[str]) -> dict[str, Status]:
        pipeline_id = grain.pipeline_id
        return await self._run(
            lambda c: schedule_rows.run_statuses(c, pipeline_id=pipeline_id, task_ids=task_ids)
        )

    async def cancel_waiting(
        self,
        *,
        grain: GrainKey,
        epoch: int,
        task_ids: Sequence[str],
        now: dt.datetime,
        retention_s: float,
    ) -> dict[Status, int]:
        def cancel(conn: sa.Connection) -> dict[Status, int]:
            fence(conn, grain=grain, epoch=epoch, now=now)
            done: dict[Status, int] = {}
            for chunk in chunks(task_ids):
                waiting = conn.execute(
                    sa.select(tasks.c.id, tasks.c.status, tasks.c.due_at).where(
                        tasks.c.pipeline_id == grain.pipeline_id,
                        tasks.c.id.in_(chunk),
                        tasks.c.status.in_(_WAITING),
                    )
                ).all()
                if not waiting:
                    continue
                scheduled = [r for r in waiting if r.status == Status.SCHEDULED.value]
                _end_timers(conn, grain, [(from_db_required(r.due_at), r.id) for r in scheduled])
                conn.execute(
                    sa.update(tasks)
                    .where(
                        tasks.c.pipeline_id == grain.pipeline_id,
                        tasks.c.id.in_([r.id for r in waiting]),
                    )
                    .values(
                        status=Status.CANCELLED.value,
                        error="cancelled",
                        finished_at=to_db(now),
                        updated_at=to_db(now),
                        expire_at=to_db(now + dt.timedelta(seconds=retention_s)),
                    )
                )
                for row in waiting:
                    done[Status(row.status)] = done.get(Status(row.status), 0) + 1
            return done

        return await self._run(cancel)

    async def requeue_dead(
        self,
        *,
        grain: GrainKey,
        epoch: int,
        task_ids: Sequence[str],
        now: dt.datetime,
    ) -> list[Task]:
        def requeue(conn: sa.Connection) -> list[Task]:
            fence(conn, grain=grain, epoch=epoch, now=now)
            # Only the rows that are dead now: a requeue replayed after a crash finds them
            # queued already and must not count them out of ``dead`` a second time.
            ids = (
                conn.execute(
                    sa.select(tasks.c.id).where(
                        tasks.c.pipeline_id == grain.pipeline_id,
                        tasks.c.id.in_(task_ids),
                        tasks.c.status == Status.DEAD.value,
                    )
                )
                .scalars()
                .all()
            )
            if not ids:
                return []
            where = (tasks.c.pipeline_id == grain.pipeline_id, tasks.c.id.in_(ids))
            conn.execute(
                sa.update(tasks)
                .where(*where)
                .values(
                    status=Status.QUEUED.value,
                    attempt=1,
                    error=None,
                    finished_at=None,
                    started_at=None,
                    worker=None,
                    lease_epoch=None,
                    expire_at=None,
                    updated_at=to_db(now),
                )
            )
            rows = conn.execute(
                sa.select(*_TASK_COLUMNS).where(*where, tasks.c.status == Status.QUEUED.value)
            ).all()
            return [_task(row) for row in rows]

        return await self._run(requeue)

    async def purge_dead(
        self, *, grain: GrainKey, epoch: int, purges: Sequence[Purge], now: dt.datetime
    ) -> int:
        def purge(conn: sa.Connection) -> int:
            fence(conn, grain=grain, epoch=epoch, now=now)
            return _purge(conn, grain.pipeline_id, purges)

        return await self._run(purge)

    async def page_queued(self, *, grain: GrainKey, after: str, limit: int) -> list[Task]:
        pipeline_id = grain.pipeline_id

        def page(conn: sa.Connection) -> list[Task]:
            rows = conn.execute(
                sa.select(*_TASK_COLUMNS)
                .where(
                    tasks.c.pipeline_id == pipeline_id,
                    tasks.c.status == Status.QUEUED.value,
                    tasks.c.id > after,
                )
                .order_by(tasks.c.id)
                .limit(limit)
            ).all()
            return [_task(row) for row in rows]

        return await self._run(page)

    async def page_timers(
        self, *, grain: GrainKey, after: TimerKey | None, limit: int
    ) -> list[TimerKey]:
        def page(conn: sa.Connection) -> list[TimerKey]:
            query = sa.select(task_timers.c.due_at, task_timers.c.task_id).where(
                task_timers.c.pipeline_id == grain.pipeline_id
            )
            if after is not None:
                query = query.where(
                    sa.tuple_(task_timers.c.due_at, task_timers.c.task_id)
                    > sa.tuple_(sa.literal(to_db(after[0]), Timestamp), sa.literal(after[1]))
                )
            rows = conn.execute(
                query.order_by(task_timers.c.due_at, task_timers.c.task_id).limit(limit)
            ).all()
            return [(from_db_required(row.due_at), row.task_id) for row in rows]

        return await self._run(page)

    async def fire_timers(
        self, *, grain: GrainKey, epoch: int, timers: Sequence[TimerKey], now: dt.datetime
    ) -> list[Task]:
        def fire(conn: sa.Connection) -> list[Task]:
            fence(conn, grain=grain, epoch=epoch, now=now)
            _end_timers(conn, grain, timers)
            ids = [task_id for _, task_id in timers]
            where = (
                tasks.c.pipeline_id == grain.pipeline_id,
                tasks.c.id.in_(ids),
                tasks.c.status == Status.SCHEDULED.value,
            )
            rows = conn.execute(sa.select(*_TASK_COLUMNS).where(*where)).all()
            if rows:
                conn.execute(
                    sa.update(tasks)
                    .where(*where)
                    .values(status=Status.QUEUED.value, updated_at=to_db(now))
                )
            return [dataclasses.replace(_task(row), status=Status.QUEUED) for row in rows]

        return await self._run(fire)

    async def flush(
        self,
        *,
        grain: GrainKey,
        epoch: int,
        flush: Flush,
        stats: Mapping[str, int],
        now: dt.datetime,
    ) -> None:
        def write(conn: sa.Connection) -> None:
            fence(conn, grain=grain, epoch=epoch, now=now)
            _write_changes(conn, pipeline_id=grain.pipeline_id, flush=flush, now=now)
            upsert(
                conn,
                pipeline_stats,
                [
                    {
                        "pipeline_id": grain.pipeline_id,
                        "counts_json": json.dumps(dict(stats)),
                        "updated_at": to_db(now),
                    }
                ],
                keys=("pipeline_id",),
                update=("counts_json", "updated_at"),
            )

        await self._run(write)


def _insert_new(
    conn: sa.Connection, *, pipeline_id: str, batch: Sequence[NewTask], now: dt.datetime
) -> Admission:
    unique: dict[str, NewTask] = {}
    for task in batch:
        unique.setdefault(task.id, task)  # a resubmit inside the batch: the first stands
    existing: dict[str, bytes] = {}
    for chunk in chunks(list(unique)):
        rows = conn.execute(
            sa.select(tasks.c.id, tasks.c.data_sha256).where(
                tasks.c.pipeline_id == pipeline_id, tasks.c.id.in_(chunk)
            )
        )
        existing.update((row.id, row.data_sha256) for row in rows)
    fresh = [task for tid, task in unique.items() if tid not in existing]
    status = {t.id: Status.SCHEDULED if t.due_at > now else Status.QUEUED for t in fresh}
    inserts = [
        {
            "pipeline_id": pipeline_id,
            "id": t.id,
            "attempt": 1,
            "status": status[t.id].value,
            "due_at": to_db(t.due_at),
            "expires_at": to_db(t.expires_at),
            "policy_json": policy_to_json(t.retry, t.execution_timeout_s),
            "schedule_id": t.schedule_id,
            "fire_at": to_db(t.fire_at),
            "data": t.data,
            "data_sha256": t.data_sha256,
            "created_at": to_db(t.created_at),
            "updated_at": to_db(now),
        }
        for t in fresh
    ]
    for insert_chunk in chunks(inserts):
        conn.execute(sa.insert(tasks), list(insert_chunk))
    timers = [
        {"pipeline_id": pipeline_id, "due_at": to_db(t.due_at), "task_id": t.id}
        for t in fresh
        if status[t.id] is Status.SCHEDULED
    ]
    for timer_chunk in chunks(timers):
        conn.execute(sa.insert(task_timers), list(timer_chunk))
    same = [tid for tid, digest in existing.items() if digest == unique[tid].data_sha256]
    return Admission(
        admitted=[
            Task(
                id=t.id,
                attempt=1,
                status=status[t.id],
                data=t.data,
                due_at=t.due_at,
                created_at=t.created_at,
                expires_at=t.expires_at,
                retry=t.retry,
                schedule_id=t.schedule_id,
                fire_at=t.fire_at,
                execution_timeout_s=t.execution_timeout_s,
            )
            for t in fresh
        ],
        duplicates=same,
        conflicts=[tid for tid in existing if tid not in same],
    )


def policy_to_json(retry: RetryOverride | None, execution_timeout_s: float | None) -> str | None:
    """A task's own policy as stored: its retry policy and execution timeout (None: the
    pipeline's). Kept with the row, so a retry after a failover keeps it."""
    doc: dict[str, Any] = {}
    if retry is not None:
        if retry.max_attempts is not None:
            doc["max_attempts"] = retry.max_attempts
        if retry.backoff is not None:
            doc["backoff"] = dataclasses.asdict(retry.backoff)
    if execution_timeout_s is not None:
        doc["execution_timeout_s"] = execution_timeout_s
    return json.dumps(doc, separators=(",", ":"), sort_keys=True) if doc else None


def policy_from_json(text: str | None) -> tuple[RetryOverride | None, float | None]:
    """(retry override, execution timeout) of a stored policy; rows written before the
    timeout existed hold a retry policy only."""
    if not text:
        return None, None
    doc = json.loads(text)
    timeout_s = doc.get("execution_timeout_s")
    if "max_attempts" not in doc and "backoff" not in doc:  # an empty override is none
        return None, timeout_s
    backoff = doc.get("backoff")
    retry = RetryOverride(
        max_attempts=doc.get("max_attempts"),
        backoff=Backoff(**backoff) if backoff else None,
    )
    return retry, timeout_s


def _purge(conn: sa.Connection, pipeline_id: str, purges: Sequence[Purge]) -> int:
    """Delete the dead tasks among ``purges`` that died before their purge's time, with
    their results and attempts; how many went. Grouped by time and chunked, so a bulk
    purge costs a few statements, not three per task. A replayed purge finds nothing."""
    by_time: dict[dt.datetime, list[str]] = {}
    for purge in purges:
        by_time.setdefault(purge.finished_before, []).append(purge.task_id)
    gone = 0
    for before, task_ids in by_time.items():
        for chunk in chunks(sorted(set(task_ids))):
            victims = (
                conn.execute(
                    sa.select(tasks.c.id).where(
                        tasks.c.pipeline_id == pipeline_id,
                        tasks.c.id.in_(chunk),
                        tasks.c.status == Status.DEAD.value,
                        tasks.c.finished_at < to_db(before),
                    )
                )
                .scalars()
                .all()
            )
            if victims:
                _delete_tasks(conn, pipeline_id, victims)
            gone += len(victims)
    return gone


def _delete_tasks(conn: sa.Connection, pipeline_id: str, task_ids: Sequence[str]) -> None:
    conn.execute(
        sa.delete(task_attempts).where(
            task_attempts.c.pipeline_id == pipeline_id, task_attempts.c.task_id.in_(task_ids)
        )
    )
    conn.execute(
        sa.delete(task_results).where(
            task_results.c.pipeline_id == pipeline_id, task_results.c.id.in_(task_ids)
        )
    )
    conn.execute(
        sa.delete(tasks).where(tasks.c.pipeline_id == pipeline_id, tasks.c.id.in_(task_ids))
    )


#: Statuses of a task that has not started: a cancel ends it in the store.
_WAITING = (Status.QUEUED.value, Status.SCHEDULED.value)


def _end_timers(conn: sa.Connection, grain: GrainKey, timers: Sequence[TimerKey]) -> None:
    """Delete these timer rows (a task's timer ends when it fires or is cancelled)."""
    for chunk in chunks(timers):
        conn.execute(
            sa.delete(task_timers).where(
                task_timers.c.pipeline_id == grain.pipeline_id,
                sa.or_(
                    *(
                        sa.and_(
                            task_timers.c.due_at == to_db(due_at),
                            task_timers.c.task_id == task_id,
                        )
                        for due_at, task_id in chunk
                    )
                ),
            )
        )


def _save_offsets(conn: sa.Connection, *, grain: GrainKey, offsets: Mapping[int, int]) -> None:
    if offsets:
        upsert(
            conn,
            grain_offsets,
            [
                {"grain_id": str(grain), "topic_partition": p, "next_offset": o}
                for p, o in offsets.items()
            ],
            keys=("grain_id", "topic_partition"),
            update=("next_offset",),
        )


#: What the columns hold: TiDB counts VARCHAR in characters and TEXT in bytes.
_WORKER_CHARS = cast(sa.String, tasks.c.worker.type).length or 255
_ERROR_BYTES = 65_535


def _fit_worker(worker: str | None) -> str | None:
    if worker is None or len(worker) <= _WORKER_CHARS:
        return worker
    log.warning("a worker name of %d characters is cut to %d", len(worker), _WORKER_CHARS)
    return worker[:_WORKER_CHARS]


def _fit_error(error: str | None) -> str | None:
    """The error's tail (where a failure's cause is) within the column's bytes."""
    if error is None:
        return None
    encoded = error.encode()
    if len(encoded) <= _ERROR_BYTES:
        return error
    log.warning("an error of %d bytes is cut to its last %d", len(encoded), _ERROR_BYTES)
    return encoded[-_ERROR_BYTES:].decode(errors="ignore")


def _write_changes(
    conn: sa.Connection, *, pipeline_id: str, flush: Flush, now: dt.datetime
) -> None:
    """Upsert the changed rows. ``worker`` and ``error`` are cut to their columns here too,
    though the worker API bounds them: a value the column cannot hold would fail every
    flush of the grain, its restarts' included, and stop the whole pipeline."""
    if flush.changes:
        rows = [
            {
                "pipeline_id": pipeline_id,
                "id": c.id,
                "attempt": c.attempt,
                "status": c.status.value,
                "started_at": to_db(c.started_at),
                "finished_at": to_db(c.finished_at),
                "worker": _fit_worker(c.worker),
                "error": _fit_error(c.error),
                "lease_epoch": c.lease_epoch,
                "expire_at": to_db(c.expire_at),
                "updated_at": to_db(now),
                "due_at": to_db(c.due_at),
                # Required by the INSERT half of the upsert; never written over an existing row.
                "data": b"",
                "data_sha256": b"",
                "created_at": to_db(now),
            }
            for c in flush.changes
        ]
        upsert(conn, tasks, rows, keys=("pipeline_id", "id"), update=_MUTABLE)
        timers = [
            {"pipeline_id": pipeline_id, "due_at": to_db(c.due_at), "task_id": c.id}
            for c in flush.changes
            if c.status is Status.SCHEDULED
        ]
        # A retry's timer; written again by a flush that is retried, hence the upsert.
        keys = ("pipeline_id", "due_at", "task_id")
        upsert(conn, task_timers, timers, keys=keys, update=("task_id",))
    if flush.results:
        expire = {c.id: to_db(c.expire_at) for c in flush.changes}
        upsert(
            conn,
            task_results,
            [
                {
                    "pipeline_id": pipeline_id,
                    "id": tid,
                    "attempt": attempt,
                    "result": result,
                    "expire_at": expire.get(tid),
                }
                for tid, attempt, result in flush.results
            ],
            keys=("pipeline_id", "id"),
            update=("attempt", "result", "expire_at"),
        )
    history = [
        {
            "pipeline_id": pipeline_id,
            "task_id": a.task_id,
            "attempt": a.attempt,
            "worker": _fit_worker(a.worker),
            "started_at": to_db(a.started_at),
            "ended_at": to_db(a.ended_at),
            "outcome": a.outcome,
            "error": _fit_error(a.error),
            "expire_at": to_db(a.expire_at),
        }
        for a in flush.attempts
    ]
    # Written again by a flush that is retried after a failure: the same row, hence upsert.
    keys = ("pipeline_id", "task_id", "attempt")
    upsert(conn, task_attempts, history, keys=keys, update=("ended_at", "outcome", "error"))

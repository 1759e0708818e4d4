"""The pipeline grain's store over SQLAlchemy: TiDB in production, SQLite in development.

Every write a grain makes runs in one transaction that first checks the grain's epoch
(``fencing.py``); the writes of grains that write at the same moment share one, and so
do their activations' reads (``grain_reads.py``). SQLAlchemy here is synchronous
(pymysql); calls run in worker threads.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar, cast

import sqlalchemy as sa

from actors.pipeline.book_flush import Flush
from actors.pipeline.model import GrainKey, NewTask, Purge, Status, Task
from actors.pipeline.ports import (
    Activation,
    Admission,
    Loaded,
    StoredSchedule,
)
from actors.pipeline.schedules import ScheduleState
from actors.pipeline.timers import TimerKey
from services.placement import shard_of_grain
from services.store import schedule_rows
from services.store.coalesce import Batcher, Coalescer
from services.store.fencing import (
    claim_fenced,
    claim_key,
    fence,
    fence_all,
    in_transaction,
    set_wake,
    together,
)
from services.store.grain_reads import (
    TASK_COLUMNS,
    ToActivate,
    ToFire,
    activate_many,
    fire_many,
    load_grain,
    page_timers,
    task_from_row,
)
from services.store.schema import (
    pipeline_stats,
    tasks,
)
from services.store.sql import chunks, from_db_required, to_db, upsert
from services.store.task_writes import (
    WAITING,
    end_timers,
    insert_new,
    purge_rows,
    save_offsets,
    stored_digests,
    write_changes,
)

log = logging.getLogger("wsched.store.tasks")
R = TypeVar("R")

#: Grains claimed and read per activation transaction at most.
ACTIVATION_BATCH = 256
#: Tasks (plus one per grain) written per shared transaction at most; a grain's batch
#: larger than this has a transaction of its own.
WRITE_BATCH = 5000
#: Shared transactions of fenced writes in flight at once (the loop's default executor
#: has cores + 4 threads).
WRITE_CONCURRENCY = 4
#: Timers (plus one per grain) fired per shared transaction at most: their tasks are read
#: in one statement per 500.
FIRE_BATCH = 5000


class SqlTaskStore:
    """Implements ``actors.pipeline.ports.TaskStore``."""

    def __init__(self, *, engine: sa.Engine, clock: Callable[[], dt.datetime]) -> None:
        self._engine = engine
        self._clock = clock
        self._activations: Coalescer[ToActivate, Activation] = Coalescer(
            self._activate_many, max_batch=ACTIVATION_BATCH, concurrency=2
        )
        self._writes: Batcher[_Fenced, object] = Batcher(
            self._write_many,
            weight=lambda item: item.weight,
            max_weight=WRITE_BATCH,
            # Grains that write alone keep writing side by side, as before batching.
            concurrency=WRITE_CONCURRENCY,
        )

        self._fires: Batcher[ToFire, object] = Batcher(
            self._fire_many,
            weight=lambda item: len(item.timers) + 1,
            max_weight=FIRE_BATCH,
            concurrency=2,
        )

    async def _run(self, fn: Callable[[sa.Connection], R]) -> R:
        return await in_transaction(self._engine, fn)

    async def claim(self, *, grain: GrainKey, owner: str) -> int:
        now = self._clock()

        def claim(conn: sa.Connection) -> int:
            return claim_key(conn, key=str(grain), owner=owner, now=now)

        return await claim_fenced(self._engine, claim, what=f"grain {grain}")

    async def load(self, *, grain: GrainKey) -> Loaded:
        return await self._run(lambda conn: load_grain(conn, grain))

    async def rest(self, *, grain: GrainKey, epoch: int, wake_at: dt.datetime) -> None:
        """Fenced; shares a transaction with other grains' writes (``admit``): a herd of
        grains going to rest at once is a few transactions, not one each."""
        shard = shard_of_grain(grain)

        def write(conn: sa.Connection) -> None:
            set_wake(conn, grain=grain, shard=shard, wake_at=wake_at)

        await self._writes.submit(
            _Fenced(grain=grain, epoch=epoch, now=self._clock(), weight=1, write=write)
        )

    async def activate(self, *, grain: GrainKey, owner: str, timers: int) -> Activation:
        """Activations asked for while others are read go together (``coalesce.py``)."""
        return await self._activations.get(ToActivate(grain=grain, owner=owner, timers=timers))

    async def _activate_many(self, wanted: Sequence[ToActivate]) -> dict[ToActivate, Activation]:
        now = self._clock()
        return await claim_fenced(
            self._engine,
            lambda conn: activate_many(conn, wanted, now=now),
            what=f"{len(wanted)} grain(s)",
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
        """Admissions and flushes of other grains asked for meanwhile share the
        transaction (``_write_many``)."""
        item = _ToAdmit(
            grain=grain,
            epoch=epoch,
            tasks=tasks,
            offsets=offsets,
            now=now,
            schedules=schedules,
            dropped_schedules=dropped_schedules,
        )
        admission = await self._writes.submit(
            _Fenced(grain=grain, epoch=epoch, now=now, weight=len(tasks) + 1, write=item.write)
        )
        return cast(Admission, admission)

    async def _write_many(self, items: Sequence[_Fenced]) -> list[object | Exception]:
        """Fenced writes of many grains in one transaction: their fencing rows checked in
        one statement, then each grain's writes."""

        def write_all(conn: sa.Connection, items: Sequence[_Fenced]) -> list[object]:
            fence_all(conn, items)
            return [item.write(conn) for item in items]

        return await together(self._engine, items, write_all, what="fenced writes")

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
                        tasks.c.status.in_(WAITING),
                    )
                ).all()
                if not waiting:
                    continue
                scheduled = [r for r in waiting if r.status == Status.SCHEDULED.value]
                end_timers(
                    conn, grain.pipeline_id, [(from_db_required(r.due_at), r.id) for r in scheduled]
                )
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
                sa.select(*TASK_COLUMNS).where(*where, tasks.c.status == Status.QUEUED.value)
            ).all()
            return [task_from_row(row) for row in rows]

        return await self._run(requeue)

    async def purge_dead(
        self, *, grain: GrainKey, epoch: int, purges: Sequence[Purge], now: dt.datetime
    ) -> int:
        def purge(conn: sa.Connection) -> int:
            fence(conn, grain=grain, epoch=epoch, now=now)
            return purge_rows(conn, grain.pipeline_id, purges)

        return await self._run(purge)

    async def stored_digests(self, *, grain: GrainKey, task_ids: Sequence[str]) -> dict[str, bytes]:
        pipeline_id = grain.pipeline_id
        return await self._run(lambda conn: stored_digests(conn, pipeline_id, task_ids))

    async def page_queued(self, *, grain: GrainKey, after: str, limit: int) -> list[Task]:
        pipeline_id = grain.pipeline_id

        def page(conn: sa.Connection) -> list[Task]:
            rows = conn.execute(
                sa.select(*TASK_COLUMNS)
                .where(
                    tasks.c.pipeline_id == pipeline_id,
                    tasks.c.status == Status.QUEUED.value,
                    tasks.c.id > after,
                )
                .order_by(tasks.c.id)
                .limit(limit)
            ).all()
            return [task_from_row(row) for row in rows]

        return await self._run(page)

    async def page_timers(
        self, *, grain: GrainKey, after: TimerKey | None, limit: int
    ) -> list[TimerKey]:
        pipeline_id = grain.pipeline_id
        return await self._run(lambda conn: page_timers(conn, pipeline_id, after, limit))

    async def fire_timers(
        self, *, grain: GrainKey, epoch: int, timers: Sequence[TimerKey], now: dt.datetime
    ) -> list[Task]:
        """Firings of other grains asked for meanwhile go together (``_fire_many``): a
        herd of timers due at one moment is one fenced read, not a transaction each."""
        fired = await self._fires.submit(
            ToFire(grain=grain, epoch=epoch, timers=tuple(timers), now=now)
        )
        return cast(list[Task], fired)

    async def _fire_many(self, items: Sequence[ToFire]) -> list[object | Exception]:
        """Many grains' firings in one transaction (``grain_reads.fire_many``)."""
        return await together(self._engine, items, fire_many, what="firings")

    async def flush(
        self,
        *,
        grain: GrainKey,
        epoch: int,
        flush: Flush,
        stats: Mapping[str, int],
        now: dt.datetime,
    ) -> None:
        """Shares a transaction with other grains' admissions and flushes (``admit``)."""

        def write(conn: sa.Connection) -> None:
            write_changes(conn, grain=grain, flush=flush, now=now)
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

        weight = 1 + len(flush.changes) + len(flush.results) + len(flush.attempts)
        await self._writes.submit(
            _Fenced(grain=grain, epoch=epoch, now=now, weight=weight, write=write)
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Fenced:
    """A grain's writes, to run after its fencing row is checked (``_write_many``)."""

    grain: GrainKey
    epoch: int
    now: dt.datetime
    #: Rows it writes, about: bounds the shared transaction.
    weight: int
    write: Callable[[sa.Connection], object]


@dataclasses.dataclass(frozen=True, kw_only=True)
class _ToAdmit:
    grain: GrainKey
    epoch: int
    tasks: Sequence[NewTask]
    offsets: Mapping[int, int]
    now: dt.datetime
    schedules: Sequence[ScheduleState]
    dropped_schedules: Sequence[str]

    def write(self, conn: sa.Connection) -> Admission:
        grain, now = self.grain, self.now
        admission = insert_new(conn, pipeline_id=grain.pipeline_id, batch=self.tasks, now=now)
        save_offsets(conn, grain=grain, offsets=self.offsets)
        if self.schedules or self.dropped_schedules:
            schedule_rows.write(
                conn,
                pipeline_id=grain.pipeline_id,
                states=self.schedules,
                dropped=self.dropped_schedules,
                now=now,
            )
        return admission

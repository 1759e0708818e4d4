"""What a grain reads of its rows: tasks as ``Task`` values, its state at activation
(for a batch of grains at once: one statement per table), and its timers in order."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from actors.pipeline.model import GrainKey, Status, Task
from actors.pipeline.ports import Activation, Loaded
from actors.pipeline.timers import TimerKey
from services.store import schedule_rows
from services.store.fencing import claim_keys, fence_all
from services.store.schema import grain_offsets, task_timers, tasks
from services.store.sql import chunks, from_db, from_db_required, to_db
from services.store.task_writes import end_timers, policy_from_json
from services.store.types import Timestamp

SCHEDULED = Status.SCHEDULED.value

TASK_COLUMNS = (
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
    tasks.c.trace_parent,
)


def task_from_row(row: sa.Row[*tuple[Any, ...]]) -> Task:
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
        trace_parent=row.trace_parent,
    )


def load_grain(conn: sa.Connection, grain: GrainKey) -> Loaded:
    pipeline_id = grain.pipeline_id
    counts = conn.execute(
        sa.select(tasks.c.status, sa.func.count())
        .where(tasks.c.pipeline_id == pipeline_id)
        .group_by(tasks.c.status)
    ).all()
    leased = conn.execute(
        sa.select(*TASK_COLUMNS).where(
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
        leased=[task_from_row(row) for row in leased],
        offsets={int(p): int(o) for p, o in offsets},
    )


def page_timers(
    conn: sa.Connection, pipeline_id: str, after: TimerKey | None, limit: int
) -> list[TimerKey]:
    query = sa.select(task_timers.c.due_at, task_timers.c.task_id).where(
        task_timers.c.pipeline_id == pipeline_id
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


@dataclasses.dataclass(frozen=True, kw_only=True)
class ToActivate:
    grain: GrainKey
    owner: str
    timers: int


def activate_many(
    conn: sa.Connection, wanted: Sequence[ToActivate], *, now: dt.datetime
) -> dict[ToActivate, Activation]:
    """Claim the grains and read what each starts from: one statement per table for all
    of them (``chunks`` of them), plus a timer page per pipeline that has timers."""
    by_owner: dict[str, list[str]] = {}
    for item in wanted:
        by_owner.setdefault(item.owner, []).append(str(item.grain))
    epochs: dict[str, int] = {}
    for owner, keys in by_owner.items():
        epochs.update(claim_keys(conn, keys=keys, owner=owner, now=now))
    pipeline_ids = list(dict.fromkeys(item.grain.pipeline_id for item in wanted))
    counts: dict[str, dict[Status, int]] = {}
    leased: dict[str, list[Task]] = {}
    offsets: dict[str, dict[int, int]] = {}
    with_timers: set[str] = set()
    for chunk in chunks(pipeline_ids):
        for pipeline_id, status, n in conn.execute(
            sa.select(tasks.c.pipeline_id, tasks.c.status, sa.func.count())
            .where(tasks.c.pipeline_id.in_(chunk))
            .group_by(tasks.c.pipeline_id, tasks.c.status)
        ):
            counts.setdefault(pipeline_id, {})[Status(status)] = int(n)
        for row in conn.execute(
            sa.select(tasks.c.pipeline_id, *TASK_COLUMNS).where(
                tasks.c.pipeline_id.in_(chunk), tasks.c.status == Status.LEASED.value
            )
        ):
            leased.setdefault(row.pipeline_id, []).append(task_from_row(row))
        with_timers.update(
            conn.execute(
                sa.select(task_timers.c.pipeline_id)
                .where(task_timers.c.pipeline_id.in_(chunk))
                .distinct()
            ).scalars()
        )
    for chunk in chunks(list({str(item.grain) for item in wanted})):
        for grain_id, partition, next_offset in conn.execute(
            sa.select(
                grain_offsets.c.grain_id,
                grain_offsets.c.topic_partition,
                grain_offsets.c.next_offset,
            ).where(grain_offsets.c.grain_id.in_(chunk))
        ):
            offsets.setdefault(grain_id, {})[int(partition)] = int(next_offset)
    stored_schedules = schedule_rows.load_of(conn, pipeline_ids)
    timer_pages: dict[str, list[TimerKey]] = {}
    for pipeline_id in with_timers:
        limit = max(item.timers for item in wanted if item.grain.pipeline_id == pipeline_id)
        timer_pages[pipeline_id] = page_timers(conn, pipeline_id, after=None, limit=limit)
    return {
        item: Activation(
            epoch=epochs[str(item.grain)],
            loaded=Loaded(
                counts=counts.get(item.grain.pipeline_id, {}),
                leased=leased.get(item.grain.pipeline_id, []),
                offsets=offsets.get(str(item.grain), {}),
            ),
            schedules=stored_schedules.get(item.grain.pipeline_id, []),
            timers=timer_pages.get(item.grain.pipeline_id, [])[: item.timers],
        )
        for item in wanted
    }


@dataclasses.dataclass(frozen=True, kw_only=True)
class ToFire:
    """A grain's due timers, to read their tasks (``fire_many``)."""

    grain: GrainKey
    epoch: int
    timers: tuple[TimerKey, ...]
    now: dt.datetime


def fire_many(conn: sa.Connection, items: Sequence[ToFire]) -> list[list[Task]]:
    """Fenced, read the tasks of many grains' due timers that are still ``scheduled``, as
    queued, in one statement per 500 tasks. Nothing else is written: their rows stay
    ``scheduled`` and their timer rows stay until the flush that writes their next state
    (a crash before then fires them again). A timer whose task is no longer scheduled is
    stale, and is deleted."""
    fence_all(conn, items)
    wanted = list(dict.fromkeys((i.grain.pipeline_id, key[1]) for i in items for key in i.timers))
    rows: dict[tuple[str, str], Any] = {}
    for chunk in chunks(wanted):
        query = sa.select(*TASK_COLUMNS, tasks.c.pipeline_id).where(
            sa.tuple_(tasks.c.pipeline_id, tasks.c.id).in_(chunk)
        )
        rows.update(((row.pipeline_id, row.id), row) for row in conn.execute(query))
    fired: list[list[Task]] = []
    for item in items:
        pipeline_id = item.grain.pipeline_id
        found = [(key, rows.get((pipeline_id, key[1]))) for key in item.timers]
        live = [row for _, row in found if row is not None and row.status == SCHEDULED]
        end_timers(
            conn, pipeline_id, [key for key, row in found if row is None or row.status != SCHEDULED]
        )
        fired.append(
            [dataclasses.replace(task_from_row(row), status=Status.QUEUED) for row in live]
        )
    return fired

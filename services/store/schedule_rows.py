"""The grain's side of schedules in SQL: definitions read, firing states written.

The API writes definitions (``services/store/control/_schedules.py``); the firing grain
reads them here and writes the states, inside the fenced transaction of
``SqlTaskStore.admit`` so that a schedule's runs and its next fire time land together.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from actors.pipeline.model import Status
from actors.pipeline.ports import StoredSchedule
from actors.pipeline.recurrence import InvalidRecurrence
from actors.pipeline.schedules import ScheduleSpec, ScheduleState
from services.store.schema import schedule_state, schedules, tasks
from services.store.sql import chunks, to_db, upsert

log = logging.getLogger("wsched.store.schedules")


def _query() -> sa.Select[Any]:
    return sa.select(
        schedules.c.pipeline_id,
        schedules.c.id,
        schedules.c.name,
        schedules.c.version,
        schedules.c.paused,
        schedules.c.spec_json,
        schedule_state.c.state_json,
    ).select_from(
        schedules.outerjoin(schedule_state, schedule_state.c.schedule_id == schedules.c.id)
    )


def load(
    conn: sa.Connection, *, pipeline_id: str, ids: Sequence[str] | None
) -> list[StoredSchedule]:
    query = _query().where(schedules.c.pipeline_id == pipeline_id)
    rows = []
    if ids is None:
        rows = list(conn.execute(query))
    else:
        for chunk in chunks(list(ids)):
            rows += conn.execute(query.where(schedules.c.id.in_(chunk))).all()
    return [stored for row in rows if (stored := _stored(row)) is not None]


def load_of(conn: sa.Connection, pipeline_ids: Sequence[str]) -> dict[str, list[StoredSchedule]]:
    """Every schedule of many pipelines (those with none are absent)."""
    out: dict[str, list[StoredSchedule]] = {}
    for chunk in chunks(list(pipeline_ids)):
        for row in conn.execute(_query().where(schedules.c.pipeline_id.in_(chunk))):
            if (stored := _stored(row)) is not None:
                out.setdefault(row.pipeline_id, []).append(stored)
    return out


def _stored(row: sa.Row[Any]) -> StoredSchedule | None:
    try:
        spec = ScheduleSpec.from_doc(
            id=row.id,
            name=row.name,
            version=row.version,
            paused=bool(row.paused),
            doc=json.loads(row.spec_json),
        )
    except (InvalidRecurrence, ValueError, KeyError) as err:
        # Validated by the API when written; a time zone gone from the zone database
        # can still break it. The schedule stays stopped and says why in the log.
        log.warning("schedule %s of pipeline %s cannot be fired: %s", row.id, row.pipeline_id, err)
        return None
    state = ScheduleState.from_doc(json.loads(row.state_json)) if row.state_json else None
    return StoredSchedule(spec=spec, state=state)


def versions(conn: sa.Connection, *, pipeline_id: str) -> dict[str, int]:
    rows = conn.execute(
        sa.select(schedules.c.id, schedules.c.version).where(schedules.c.pipeline_id == pipeline_id)
    )
    return {row.id: int(row.version) for row in rows}


def versions_of(conn: sa.Connection, pipeline_ids: Sequence[str]) -> dict[str, dict[str, int]]:
    """The schedules' versions of many pipelines (those with none are absent)."""
    out: dict[str, dict[str, int]] = {}
    for chunk in chunks(list(pipeline_ids)):
        rows = conn.execute(
            sa.select(schedules.c.pipeline_id, schedules.c.id, schedules.c.version).where(
                schedules.c.pipeline_id.in_(chunk)
            )
        )
        for row in rows:
            out.setdefault(row.pipeline_id, {})[row.id] = int(row.version)
    return out


def run_statuses(
    conn: sa.Connection, *, pipeline_id: str, task_ids: Sequence[str]
) -> dict[str, Status]:
    out: dict[str, Status] = {}
    for chunk in chunks(list(task_ids)):
        rows = conn.execute(
            sa.select(tasks.c.id, tasks.c.status).where(
                tasks.c.pipeline_id == pipeline_id, tasks.c.id.in_(chunk)
            )
        )
        out.update((row.id, Status(row.status)) for row in rows)
    return out


def write(
    conn: sa.Connection,
    *,
    pipeline_id: str,
    states: Sequence[ScheduleState],
    dropped: Sequence[str],
    now: dt.datetime,
) -> None:
    rows = [
        {
            "schedule_id": state.schedule_id,
            "pipeline_id": pipeline_id,
            "state_json": json.dumps(state.to_doc(), separators=(",", ":")),
            "updated_at": to_db(now),
        }
        for state in states
    ]
    for chunk in chunks(rows):
        upsert(
            conn,
            schedule_state,
            chunk,
            keys=("schedule_id",),
            update=("state_json", "updated_at"),
        )
    for gone in chunks(list(dropped)):
        conn.execute(sa.delete(schedule_state).where(schedule_state.c.schedule_id.in_(gone)))

"""The control store's schedules: definitions written by the API, states read back.

The API is the only writer of ``schedules`` (each change bumps ``version``); the firing
grain is the only writer of ``schedule_state`` and of the runs' tasks, read here for
``GET`` (last runs, counts, ``runs?at=``).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from actors.pipeline.schedules import run_id
from services.store.control._base import StoreBase
from services.store.records import NotFound, ScheduleRecord, ScheduleRun, new_id
from services.store.schema import schedule_state, schedules, tasks
from services.store.sql import from_db_required, to_db
from services.store.wakeups import nudge

_COLUMNS = (*schedules.c, schedule_state.c.state_json)
_JOINED = schedules.outerjoin(schedule_state, schedule_state.c.schedule_id == schedules.c.id)


class ScheduleMethods(StoreBase):
    def create_schedule(
        self, *, pipeline_id: str, name: str, spec: Mapping[str, Any], paused: bool
    ) -> ScheduleRecord:
        """A new schedule (a new id, even for a name used before); NameTaken if in use."""
        now = self._clock()
        schedule_id = new_id()
        row = {
            "id": schedule_id,
            "pipeline_id": pipeline_id,
            "name": name,
            "spec_json": json.dumps(spec, separators=(",", ":"), sort_keys=True),
            "paused": paused,
            "version": 1,
            "created_at": to_db(now),
            "updated_at": to_db(now),
        }
        self._insert_named(schedules, row, taken=f"a schedule named {name!r} already exists")
        self._wake_resting(pipeline_id)
        return ScheduleRecord(
            id=schedule_id,
            pipeline_id=pipeline_id,
            name=name,
            spec=dict(spec),
            paused=paused,
            version=1,
            created_at=now,
            updated_at=now,
        )

    def list_schedules(
        self, *, pipeline_id: str, after: str | None = None, limit: int = 100
    ) -> list[ScheduleRecord]:
        query = (
            sa.select(*_COLUMNS).select_from(_JOINED).where(schedules.c.pipeline_id == pipeline_id)
        )
        if after is not None:
            query = query.where(schedules.c.name > after)
        query = query.order_by(schedules.c.name).limit(limit)
        with self._engine.connect() as conn:
            return [_record(row) for row in conn.execute(query)]

    def get_schedule(self, *, pipeline_id: str, name: str) -> ScheduleRecord | None:
        query = (
            sa.select(*_COLUMNS)
            .select_from(_JOINED)
            .where(schedules.c.pipeline_id == pipeline_id, schedules.c.name == name)
        )
        with self._engine.connect() as conn:
            row = conn.execute(query).first()
        return _record(row) if row is not None else None

    def update_schedule(
        self,
        schedule: ScheduleRecord,
        *,
        spec: Mapping[str, Any] | None = None,
        paused: bool | None = None,
    ) -> ScheduleRecord:
        """Change the definition and bump its version; NotFound if it went meanwhile."""
        values: dict[str, Any] = {
            "version": schedules.c.version + 1,
            "updated_at": self._now(),
        }
        if spec is not None:
            values["spec_json"] = json.dumps(spec, separators=(",", ":"), sort_keys=True)
        if paused is not None:
            values["paused"] = paused
        with self._engine.begin() as conn:
            done = conn.execute(
                sa.update(schedules).where(schedules.c.id == schedule.id).values(values)
            )
            if done.rowcount != 1:
                raise NotFound(f"schedule {schedule.name!r} was deleted meanwhile")
            nudge(conn, pipeline_id=schedule.pipeline_id, now=self._clock())
        fresh = self.get_schedule(pipeline_id=schedule.pipeline_id, name=schedule.name)
        if fresh is None:
            raise NotFound(f"schedule {schedule.name!r} was deleted meanwhile")
        return fresh

    def delete_schedule(self, schedule: ScheduleRecord) -> None:
        """Delete the definition; the firing grain drops the state when it sees it gone."""
        with self._engine.begin() as conn:
            conn.execute(sa.delete(schedules).where(schedules.c.id == schedule.id))
            nudge(conn, pipeline_id=schedule.pipeline_id, now=self._clock())

    def _wake_resting(self, pipeline_id: str) -> None:
        """A resting grain of the pipeline reads its schedules now, in case the
        ``ScheduleChanged`` record that tells it is never produced (``wakeups.py``)."""
        with self._engine.begin() as conn:
            nudge(conn, pipeline_id=pipeline_id, now=self._clock())

    def schedule_runs(
        self,
        *,
        pipeline_id: str,
        schedule_id: str,
        at: dt.datetime | None = None,
        before: dt.datetime | None = None,
        limit: int = 5,
    ) -> list[ScheduleRun]:
        """The schedule's runs, latest first; ``at``: only the run of that fire time.

        A run's id is ``<schedule id>@<fire time>``: the primary key's range over that
        prefix finds them, in time order (no index on ``schedule_id`` to keep up on every
        task insert)."""
        prefix = f"{schedule_id}@"
        query = sa.select(tasks.c.id, tasks.c.status, tasks.c.fire_at).where(
            tasks.c.pipeline_id == pipeline_id
        )
        if at is not None:
            query = query.where(tasks.c.id == run_id(schedule_id, at))
        else:
            # The ids sort by time: prefix + RFC 3339; ``~`` sorts after every character
            # a time holds.
            high = run_id(schedule_id, before) if before is not None else prefix + "~"
            query = query.where(tasks.c.id >= prefix, tasks.c.id < high)
        query = query.order_by(tasks.c.id.desc()).limit(limit)
        with self._engine.connect() as conn:
            return [
                ScheduleRun(
                    fire_at=from_db_required(row.fire_at), task_id=row.id, status=row.status
                )
                for row in conn.execute(query)
                if row.fire_at is not None
            ]


def _record(row: sa.Row[*tuple[Any, ...]]) -> ScheduleRecord:
    return ScheduleRecord(
        id=row.id,
        pipeline_id=row.pipeline_id,
        name=row.name,
        spec=json.loads(row.spec_json),
        paused=bool(row.paused),
        version=int(row.version),
        created_at=from_db_required(row.created_at),
        updated_at=from_db_required(row.updated_at),
        state=json.loads(row.state_json) if row.state_json else None,
    )

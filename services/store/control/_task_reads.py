"""The control store's reads of what the grains write: their flushed counters and tasks.

The API reads them (pipeline stats, task pages, a submit's idempotency check); only the
grains write them, through :mod:`services.store.tasks`.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from actors.pipeline.model import Status
from services.store.control._base import StoreBase
from services.store.records import AttemptRow, ExistingTask, PipelineStats, TaskRecord
from services.store.schema import pipeline_stats, task_attempts, tasks
from services.store.sql import chunks, from_db, from_db_required, to_db


def _full_tasks() -> sa.Select[Any]:
    """Task rows with their data and result: what a read of one task answers."""
    return sa.select(*_TASK_SUMMARY, tasks.c.data, tasks.c.result)


_TASK_SUMMARY = (
    tasks.c.id,
    tasks.c.status,
    tasks.c.attempt,
    tasks.c.due_at,
    tasks.c.expires_at,
    tasks.c.created_at,
    tasks.c.started_at,
    tasks.c.finished_at,
    tasks.c.worker,
    tasks.c.error,
    tasks.c.policy_json,
)


class TaskReadMethods(StoreBase):
    def stats(self, pipeline_ids: Sequence[str]) -> dict[str, PipelineStats]:
        """The counters the grains last flushed, by pipeline (absent: nothing flushed yet)."""
        out: dict[str, PipelineStats] = {}
        for chunk in chunks(pipeline_ids):
            query = sa.select(pipeline_stats).where(pipeline_stats.c.pipeline_id.in_(chunk))
            with self._engine.connect() as conn:
                for row in conn.execute(query):
                    out[row.pipeline_id] = PipelineStats(
                        counts=json.loads(row.counts_json), updated_at=from_db(row.updated_at)
                    )
        return out

    def get_task(self, *, pipeline_id: str, task_id: str) -> TaskRecord | None:
        query = _full_tasks().where(tasks.c.pipeline_id == pipeline_id, tasks.c.id == task_id)
        with self._engine.connect() as conn:
            row = conn.execute(query).first()
        return _task_record(row, with_payloads=True) if row is not None else None

    def get_tasks(self, *, pipeline_id: str, task_ids: Sequence[str]) -> dict[str, TaskRecord]:
        """Several tasks of one pipeline in one statement (those that exist), as
        ``get_task`` reads each: for many waiters answered by one event."""
        if not task_ids:
            return {}
        query = _full_tasks().where(
            tasks.c.pipeline_id == pipeline_id, tasks.c.id.in_(list(task_ids))
        )
        with self._engine.connect() as conn:
            rows = conn.execute(query).all()
        return {row.id: _task_record(row, with_payloads=True) for row in rows}

    def task_attempts(self, *, pipeline_id: str, task_id: str) -> list[AttemptRow]:
        """The attempts that did not end the task, oldest first (the latest is the row)."""
        query = (
            sa.select(task_attempts)
            .where(task_attempts.c.pipeline_id == pipeline_id, task_attempts.c.task_id == task_id)
            .order_by(task_attempts.c.attempt)
        )
        with self._engine.connect() as conn:
            return [
                AttemptRow(
                    attempt=row.attempt,
                    worker=row.worker,
                    started_at=from_db(row.started_at),
                    ended_at=from_db(row.ended_at),
                    outcome=row.outcome,
                    error=row.error,
                )
                for row in conn.execute(query)
            ]

    def list_tasks(
        self,
        *,
        pipeline_id: str,
        status: str | None,
        after: str | None,
        limit: int,
        created_from: dt.datetime | None = None,
        created_before: dt.datetime | None = None,
    ) -> list[TaskRecord]:
        """A page of tasks ordered by id, after the cursor ``after`` (exclusive), created
        in ``[created_from, created_before)`` when given. The time filter reads the
        pipeline's rows in id order until a page is found (no index by creation time: a
        dashboard's filter, not a hot path)."""
        query = sa.select(*_TASK_SUMMARY).where(tasks.c.pipeline_id == pipeline_id)
        if status is not None:
            query = query.where(_shown_as(status, now=dt.datetime.now(dt.UTC)))
        if created_from is not None:
            query = query.where(tasks.c.created_at >= to_db(created_from))
        if created_before is not None:
            query = query.where(tasks.c.created_at < to_db(created_before))
        if after is not None:
            query = query.where(tasks.c.id > after)
        query = query.order_by(tasks.c.id).limit(limit)
        with self._engine.connect() as conn:
            return [_task_record(row, with_payloads=False) for row in conn.execute(query)]

    def dead_before(self, *, pipeline_id: str, before: dt.datetime, limit: int) -> list[TaskRecord]:
        """The first ``limit`` dead tasks (by id) that died before ``before``: what a purge
        picks. Read through the (pipeline, status, id) index, filtered by finish time."""
        query = (
            sa.select(*_TASK_SUMMARY)
            .where(
                tasks.c.pipeline_id == pipeline_id,
                tasks.c.status == "dead",
                tasks.c.finished_at < to_db(before),
            )
            .order_by(tasks.c.id)
            .limit(limit)
        )
        with self._engine.connect() as conn:
            return [_task_record(row, with_payloads=False) for row in conn.execute(query)]

    def task_summaries(self, *, pipeline_id: str, ids: Sequence[str]) -> dict[str, TaskRecord]:
        """The stored tasks among ``ids``, without data or result."""
        out: dict[str, TaskRecord] = {}
        with self._engine.connect() as conn:
            for chunk in chunks(ids):
                query = sa.select(*_TASK_SUMMARY).where(
                    tasks.c.pipeline_id == pipeline_id, tasks.c.id.in_(chunk)
                )
                for row in conn.execute(query):
                    out[row.id] = _task_record(row, with_payloads=False)
        return out

    def existing_tasks(self, *, pipeline_id: str, ids: Sequence[str]) -> dict[str, ExistingTask]:
        """The already admitted tasks among ``ids``: the idempotency check of a submit."""
        out: dict[str, ExistingTask] = {}
        with self._engine.connect() as conn:
            for chunk in chunks(ids):
                query = sa.select(tasks.c.id, tasks.c.data_sha256, tasks.c.status).where(
                    tasks.c.pipeline_id == pipeline_id, tasks.c.id.in_(chunk)
                )
                for row in conn.execute(query):
                    out[row.id] = ExistingTask(data_sha256=row.data_sha256, status=row.status)
        return out


def _shown_as(status: str, *, now: dt.datetime) -> sa.ColumnElement[bool]:
    """The rows shown with ``status``: see ``_shown_status``."""
    scheduled, due = tasks.c.status == Status.SCHEDULED.value, tasks.c.due_at <= to_db(now)
    if status == Status.QUEUED.value:
        return sa.or_(tasks.c.status == status, sa.and_(scheduled, due))
    if status == Status.SCHEDULED.value:
        return sa.and_(scheduled, sa.not_(due))
    return tasks.c.status == status


def _shown_status(status: str, due_at: dt.datetime) -> str:
    """A ``scheduled`` row whose due time has passed is queued: its timer fired in the grain,
    which writes the row's next state (leased, or an end) with its next flush."""
    if status == Status.SCHEDULED.value and due_at <= dt.datetime.now(dt.UTC):
        return Status.QUEUED.value
    return status


def _task_record(row: sa.Row[*tuple[Any, ...]], *, with_payloads: bool) -> TaskRecord:
    due_at = from_db_required(row.due_at)
    return TaskRecord(
        id=row.id,
        status=_shown_status(row.status, due_at),
        attempt=row.attempt,
        due_at=due_at,
        expires_at=from_db(row.expires_at),
        created_at=from_db_required(row.created_at),
        started_at=from_db(row.started_at),
        finished_at=from_db(row.finished_at),
        worker=row.worker,
        error=row.error,
        data=row.data if with_payloads else None,
        result=row.result if with_payloads else None,
        execution_timeout_s=_own_timeout(row.policy_json),
    )


def _own_timeout(policy_json: str | None) -> float | None:
    """The execution timeout a task was submitted with (``tasks.policy_json``)."""
    if not policy_json:
        return None
    value = json.loads(policy_json).get("execution_timeout_s")
    return float(value) if value is not None else None

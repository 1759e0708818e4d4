"""The statements of the grain's transactions: what a task's rows become.

``SqlTaskStore`` (``tasks.py``) opens each fenced transaction and reads; the writes it
runs inside are here: new tasks (with their timers), the flush's upserts of changed rows
with their results, and attempts (cut to their columns), cancels' timers, purges, offsets, and the
task's own policy document.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any, cast

import sqlalchemy as sa

from actors.pipeline.book_flush import Flush
from actors.pipeline.model import GrainKey, NewTask, Purge, Status, Task
from actors.pipeline.ports import Admission
from actors.pipeline.retry import Backoff, RetryOverride
from actors.pipeline.timers import TimerKey
from services.store.schema import (
    grain_offsets,
    task_attempts,
    task_timers,
    tasks,
)
from services.store.sql import (
    chunks,
    delete_keys,
    duplicates_fail_at_once,
    insert_rows,
    to_db,
    upsert,
)

log = logging.getLogger("wsched.store.tasks")

#: The columns a flush overwrites on an existing row (the rest are written once).
MUTABLE = (
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
    # The end's result, in the row (D1). A change without one writes NULL: every change
    # after an end starts another attempt (a requeue), which has no result yet.
    "result",
)


def insert_new(
    conn: sa.Connection, *, pipeline_id: str, batch: Sequence[NewTask], now: dt.datetime
) -> Admission:
    """Insert the tasks not stored yet; report the others as duplicates (same data) or
    conflicts (other data: the first submit stands).

    Where a duplicate key fails the INSERT itself (MySQL; TiDB in pessimistic mode with
    its in-place check, the default), the batch is inserted at once under a savepoint, and
    only a batch that collides (a replay after a crash, a resubmit) is looked up first:
    the lookup of every id was a quarter of an admission's time in TiDB.
    """
    unique: dict[str, NewTask] = {}
    for task in batch:
        unique.setdefault(task.id, task)  # a resubmit inside the batch: the first stands
    if duplicates_fail_at_once(conn):
        try:
            with conn.begin_nested():
                return _insert_fresh(conn, pipeline_id, unique, {}, now=now)
        except sa.exc.IntegrityError:
            pass  # some are stored already: look them up, then insert the others
    existing = stored_digests(conn, pipeline_id, list(unique))
    return _insert_fresh(conn, pipeline_id, unique, existing, now=now)


def _insert_fresh(
    conn: sa.Connection,
    pipeline_id: str,
    unique: Mapping[str, NewTask],
    existing: Mapping[str, bytes],
    *,
    now: dt.datetime,
) -> Admission:
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
            "trace_parent": t.trace_parent,
            "data": t.data,
            "data_sha256": t.data_sha256,
            "created_at": to_db(t.created_at),
            "updated_at": to_db(now),
        }
        for t in fresh
    ]
    for insert_chunk in chunks(inserts):
        insert_rows(conn, tasks, insert_chunk)
    timers = [
        {"pipeline_id": pipeline_id, "due_at": to_db(t.due_at), "task_id": t.id}
        for t in fresh
        if status[t.id] is Status.SCHEDULED
    ]
    for timer_chunk in chunks(timers):
        insert_rows(conn, task_timers, timer_chunk)
    same = [tid for tid, digest in existing.items() if digest == unique[tid].data_sha256]
    return Admission(
        admitted=[Task.admitted(t, status=status[t.id]) for t in fresh],
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


def purge_rows(conn: sa.Connection, pipeline_id: str, purges: Sequence[Purge]) -> int:
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
        sa.delete(tasks).where(tasks.c.pipeline_id == pipeline_id, tasks.c.id.in_(task_ids))
    )


#: Statuses of a task that has not started: a cancel ends it in the store.
WAITING = (Status.QUEUED.value, Status.SCHEDULED.value)


def end_timers(conn: sa.Connection, pipeline_id: str, timers: Sequence[TimerKey]) -> None:
    """Delete these timer rows (a task's timer ends with the write of its next state, or
    when it is cancelled)."""
    delete_keys(
        conn,
        task_timers,
        where={"pipeline_id": pipeline_id},
        columns=("due_at", "task_id"),
        keys=[(to_db(due_at), task_id) for due_at, task_id in timers],
    )


def _written_once(task: Task | None, *, now: dt.datetime, inserts: bool) -> dict[str, Any]:
    """The columns only the INSERT half of a flush's upsert writes: a task's own, when the
    flush inserts it; else placeholders, never written over an existing row. The rows of
    one statement share their columns: a flush that inserts no task (every flush without
    a write delay) sends only the three the table requires."""
    if task is None:
        required = {"data": b"", "data_sha256": b"", "created_at": to_db(now)}
        if not inserts:
            return required
        return {
            **required,
            "expires_at": None,
            "policy_json": None,
            "schedule_id": None,
            "fire_at": None,
            "trace_parent": None,
        }
    return {
        "data": task.data,
        "data_sha256": task.data_sha256 or hashlib.sha256(task.data).digest(),
        "created_at": to_db(task.created_at),
        "expires_at": to_db(task.expires_at),
        "policy_json": policy_to_json(task.retry, task.execution_timeout_s),
        "schedule_id": task.schedule_id,
        "fire_at": to_db(task.fire_at),
        "trace_parent": task.trace_parent,
    }


def stored_digests(
    conn: sa.Connection, pipeline_id: str, task_ids: Sequence[str]
) -> dict[str, bytes]:
    """The data digest of each of these tasks that has a row."""
    found: dict[str, bytes] = {}
    for chunk in chunks(list(task_ids)):
        rows = conn.execute(
            sa.select(tasks.c.id, tasks.c.data_sha256).where(
                tasks.c.pipeline_id == pipeline_id, tasks.c.id.in_(chunk)
            )
        )
        found.update((row.id, row.data_sha256) for row in rows)
    return found


def save_offsets(conn: sa.Connection, *, grain: GrainKey, offsets: Mapping[int, int]) -> None:
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


def write_changes(conn: sa.Connection, *, grain: GrainKey, flush: Flush, now: dt.datetime) -> None:
    """Upsert the changed rows, each with its result when it ended with one: one statement
    for a whole flush. A task held in memory since its admission (design D2) is inserted
    by it, with its data; the offsets its batch held back are stored with it. ``worker``
    and ``error`` are cut to their columns here too, though the worker API bounds them: a
    value the column cannot hold would fail every flush of the grain, its restarts'
    included, and stop the whole pipeline."""
    pipeline_id = grain.pipeline_id
    results = {tid: result for tid, _attempt, result in flush.results}
    inserts = any(c.insert is not None for c in flush.changes)
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
                "result": results.pop(c.id, None),
                **_written_once(c.insert, now=now, inserts=inserts),
            }
            for c in flush.changes
        ]
        upsert(conn, tasks, rows, keys=("pipeline_id", "id"), update=MUTABLE)
        timers = [
            {"pipeline_id": pipeline_id, "due_at": to_db(c.due_at), "task_id": c.id}
            for c in flush.changes
            if c.status is Status.SCHEDULED
        ]
        # A retry's timer; written again by a flush that is retried, hence the upsert.
        keys = ("pipeline_id", "due_at", "task_id")
        upsert(conn, task_timers, timers, keys=keys, update=("task_id",))
        end_timers(conn, pipeline_id, [c.ended_timer for c in flush.changes if c.ended_timer])
    # The book records a result only with the end that changes its task, so none is left;
    # should one be, it still reaches its row.
    for tid, result in results.items():
        conn.execute(
            sa.update(tasks)
            .where(tasks.c.pipeline_id == pipeline_id, tasks.c.id == tid)
            .values(result=result)
        )
    save_offsets(conn, grain=grain, offsets=flush.offsets)
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

"""Bulk operations on a pipeline's tasks: requeue, cancel and purge by ids or by status.

The API never writes task rows (the grain is their one writer, docs/architecture.md D5):
a bulk operation is one requeue, cancel or purge record per task on the pipeline's topic,
the same records the single-task routes send, produced together, at most 1,000 per
request. A record replayed or sent twice is a no-op for a task no longer in the state it
acts on.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Iterable
from typing import Literal

from fastapi import APIRouter

from actors.pipeline.model import TERMINAL, Status
from services.api.auth import CurrentTenant
from services.api.context import Ctx
from services.api.errors import TENANT_ERRORS, ApiError
from services.api.params import AppName, PipelineName
from services.api.routes.tasks import resolve
from services.api.schemas import (
    BulkCancel,
    BulkOut,
    BulkPurge,
    BulkRequeue,
    BulkResult,
    PurgeOut,
)
from services.api.submit import existing_tasks, produced, require_ready
from services.api.when import cutoff
from services.store.control import Pipeline, TaskRecord

router = APIRouter(
    prefix="/api/applications/{app}/pipelines/{pipeline}", tags=["tasks"], responses=TENANT_ERRORS
)


@router.post("/tasks:requeue", status_code=202)
async def requeue_tasks(
    app: AppName, pipeline: PipelineName, body: BulkRequeue, tenant: CurrentTenant, ctx: Ctx
) -> BulkOut:
    """Put dead tasks back in the queue: the ``ids`` given, else the first ``limit`` dead
    ones (by id). One result per task; ``skipped`` ones are not dead."""
    target = await resolve(ctx, tenant.id, app, pipeline)
    require_ready(target)
    statuses = await _statuses(ctx, target, body.ids, status=Status.DEAD, limit=body.limit)
    results = _bulk_results(
        statuses, body.ids, act="requeueing", when={Status.DEAD.value}, unknown="not_found"
    )
    chosen = [r.id for r in results if r.result == "requeueing"]
    await produced(ctx, _together(ctx.producer.requeue(target.route, tid) for tid in chosen))
    return BulkOut(results=results, acted=len(chosen))


@router.post("/tasks:cancel", status_code=202)
async def cancel_tasks(
    app: AppName, pipeline: PipelineName, body: BulkCancel, tenant: CurrentTenant, ctx: Ctx
) -> BulkOut:
    """Cancel the ``ids`` given, else the first ``limit`` tasks of ``status`` (by id).
    One result per task; ``skipped`` ones had finished."""
    if body.ids is None and body.status is None:
        raise ApiError(422, "invalid_request", "give ids, or a status (queued or scheduled)")
    target = await resolve(ctx, tenant.id, app, pipeline)
    require_ready(target)
    wanted = Status(body.status) if body.status else None
    statuses = await _statuses(ctx, target, body.ids, status=wanted, limit=body.limit)
    open_states = {s.value for s in Status if s not in TERMINAL}
    # An id not stored yet may be on its way to the scheduler: cancelled too, as the
    # single-task route does (the cancel lands behind its submit).
    results = _bulk_results(
        statuses, body.ids, act="cancelling", when=open_states, unknown="cancelling"
    )
    chosen = [r.id for r in results if r.result == "cancelling"]
    reason = "cancelled by the tenant (bulk)"
    await produced(
        ctx, _together(ctx.producer.cancel(target.route, tid, reason=reason) for tid in chosen)
    )
    return BulkOut(results=results, acted=len(chosen))


@router.post("/tasks:purge", status_code=202)
async def purge_tasks(
    app: AppName, pipeline: PipelineName, body: BulkPurge, tenant: CurrentTenant, ctx: Ctx
) -> PurgeOut:
    """Delete dead tasks that died before ``older_than`` (with their results and attempt
    history): the ``ids`` given, else the first ``limit`` such tasks (by id). One result
    per task: ``purging``, ``skipped`` (not dead, or died later), ``not_found``.

    Like requeue, purge is one record per task on the pipeline's topic, applied by the
    pipeline's grain, the one writer of task rows: it deletes a task only if it is still
    dead and died before the cutoff, so a purge never races a requeue of the same task.
    """
    before = cutoff(body.older_than, now=dt.datetime.now(dt.UTC))
    target = await resolve(ctx, tenant.id, app, pipeline)
    require_ready(target)
    if body.ids is None:
        found = await ctx.db(
            ctx.store.dead_before, pipeline_id=target.id, before=before, limit=body.limit
        )
        results = [BulkResult(id=r.id, result="purging", status=r.status) for r in found]
    else:
        stored = await ctx.db(
            ctx.store.task_summaries, pipeline_id=target.id, ids=sorted(set(body.ids))
        )
        results = [_purge_result(tid, stored.get(tid), before) for tid in dict.fromkeys(body.ids)]
    chosen = [r.id for r in results if r.result == "purging"]
    before_ms = int(before.timestamp() * 1000)
    await produced(
        ctx,
        _together(
            ctx.producer.purge(target.route, tid, finished_before_ms=before_ms) for tid in chosen
        ),
    )
    return PurgeOut(results=results, acted=len(chosen), older_than=before)


def _purge_result(task_id: str, record: TaskRecord | None, before: dt.datetime) -> BulkResult:
    if record is None:
        return BulkResult(id=task_id, result="not_found", status=None)
    old = record.finished_at is not None and record.finished_at < before
    purging = record.status == Status.DEAD.value and old
    return BulkResult(id=task_id, result="purging" if purging else "skipped", status=record.status)


async def _statuses(
    ctx: Ctx, target: Pipeline, ids: list[str] | None, *, status: Status | None, limit: int
) -> dict[str, str]:
    """Stored status by id: of the ``ids`` given, else of the first ``limit`` of ``status``."""
    if ids is not None:
        found = await existing_tasks(ctx, target, sorted(set(ids)))
        return {tid: task.status for tid, task in found.items()}
    page = await ctx.db(
        ctx.store.list_tasks,
        pipeline_id=target.id,
        status=status.value if status else None,
        after=None,
        limit=limit,
    )
    return {record.id: record.status for record in page}


BulkAct = Literal["requeueing", "cancelling", "skipped", "not_found"]


def _bulk_results(
    statuses: dict[str, str],
    ids: list[str] | None,
    *,
    act: BulkAct,
    when: set[str],
    unknown: BulkAct,
) -> list[BulkResult]:
    """One result per task, in the order asked (repeated ids once)."""
    order = list(dict.fromkeys(ids)) if ids is not None else list(statuses)
    out = []
    for tid in order:
        status = statuses.get(tid)
        if status is None:
            out.append(BulkResult(id=tid, result=unknown, status=None))
        else:
            out.append(
                BulkResult(id=tid, result=act if status in when else "skipped", status=status)
            )
    return out


async def _together(sends: Iterable[Awaitable[None]]) -> None:
    """Produce many records at once: the producer batches them, each waits for its ack."""
    await asyncio.gather(*sends)

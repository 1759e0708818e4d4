"""Tasks: read, list, cancel, requeue; the pipeline's stats. Submits are in
``submits.py``."""

from __future__ import annotations

import base64
import binascii
import json
import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from actors.pipeline.model import TERMINAL, Status
from services.api.auth import CurrentTenant
from services.api.context import Ctx
from services.api.errors import TENANT_ERRORS, ApiError, not_found
from services.api.json_depth import too_deep
from services.api.limits import Limits
from services.api.params import AppName, PipelineName, TaskIdPath
from services.api.routes.pipelines import counts_of
from services.api.schemas import (
    TASK_ID_RE,
    Accepted,
    AttemptOut,
    StatsOut,
    TaskOut,
    TaskPage,
    TaskSummary,
)
from services.api.submit import (
    existing_tasks,
    produced,
    require_ready,
)
from services.api.when import parse_duration, parse_run_at
from services.live.hub import wait_until_final
from services.store.control import Pipeline, TaskRecord

router = APIRouter(
    prefix="/api/applications/{app}/pipelines/{pipeline}", tags=["tasks"], responses=TENANT_ERRORS
)


async def resolve(ctx: Ctx, tenant_id: str, app: str, name: str) -> Pipeline:
    """The tenant's live pipeline; remembered while the database is down (see context)."""
    pipeline = await ctx.find_pipeline(tenant_id=tenant_id, application=app, name=name)
    if pipeline is not None:
        return pipeline
    if await ctx.db(ctx.store.get_application, tenant_id=tenant_id, name=app) is None:
        raise not_found(f"no application named {app!r}; GET /api/applications lists yours")
    raise not_found(
        f"no pipeline named {name!r} in application {app!r}; "
        f"GET /api/applications/{app}/pipelines lists them"
    )


def checked_task_id(value: str | None) -> str | None:
    """A task id given by the client, as stored; a malformed one is a 422."""
    if value is not None and not TASK_ID_RE.fullmatch(value):
        raise ApiError(
            422,
            "invalid_request",
            f"{value[:140]!r} is not a valid task id: use 1 to 128 letters, digits and "
            "'._:~@+=-', starting with a letter or digit",
        )
    return value


# -- reads ---------------------------------------------------------------------------------


Encoding = Literal["json", "text", "base64"]


#: Results come from workers, unchecked: nested deeper than a body may be, one would
#: exhaust the parser's stack on every read, so it reads as text.
_READ_DEPTH = Limits().max_json_depth


def _decoded(payload: bytes | None) -> tuple[Any, Encoding | None]:
    if payload is None:
        return None, None
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return base64.b64encode(payload).decode(), "base64"
    if too_deep(payload, _READ_DEPTH):
        return text, "text"
    try:
        return json.loads(text), "json"
    except ValueError:
        return text, "text"


def _summary_fields(record: TaskRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "status": record.status,
        "attempt": record.attempt,
        "error": record.error,
        "created_at": record.created_at,
        "due_at": record.due_at,
        "expires_at": record.expires_at,
        "started_at": record.started_at,
        "finished_at": record.finished_at,
        "worker": record.worker,
        "execution_timeout_s": record.execution_timeout_s,
    }


def task_out(record: TaskRecord) -> TaskOut:
    data, _ = _decoded(record.data)
    result, encoding = _decoded(record.result)
    return TaskOut(**_summary_fields(record), data=data, result=result, result_encoding=encoding)


def _task_missing(task_id: str, pipeline: str) -> ApiError:
    return not_found(
        f"no task {task_id!r} in pipeline {pipeline!r}; a task just submitted appears once "
        "the scheduler has admitted it (normally within a second or two)"
    )


@router.get("/tasks/{task_id}")
async def get_task(
    app: AppName,
    pipeline: PipelineName,
    task_id: TaskIdPath,
    tenant: CurrentTenant,
    ctx: Ctx,
    attempts: Annotated[
        bool, Query(description="Also list every attempt: worker, times, outcome, error.")
    ] = False,
    wait: Annotated[
        str | None,
        Query(
            max_length=16,
            description="Answer once the task has ended (succeeded, failed, dead, cancelled, "
            "expired) or after this long with its state then: '30s', at most 60s (the "
            "API's bound).",
            examples=["30s"],
        ),
    ] = None,
) -> TaskOut:
    """A task's state and result; with ``wait``, as soon as it ends (a long poll)."""
    wait_s = _wait_s(wait, ctx.limits)
    target = await resolve(ctx, tenant.id, app, pipeline)

    async def read() -> TaskRecord | None:
        return await ctx.db(ctx.store.get_task, pipeline_id=target.id, task_id=task_id)

    async def read_batched() -> TaskRecord | None:
        return await ctx.task_reads.read(target.id, task_id)

    if wait_s:
        record = await wait_until_final(
            ctx.live,
            pipeline_id=target.id,
            task_id=task_id,
            read=read_batched,
            final=_ended,
            timeout_s=wait_s,
            clock=ctx.clock,
            answered=lambda at_ms: ctx.metrics.wait_lag.observe(
                max(0.0, time.time() - at_ms / 1000)
            ),
        )
    else:
        record = await read()
    if record is None:
        raise _task_missing(task_id, pipeline)
    out = task_out(record)
    if attempts:
        earlier = await ctx.db(ctx.store.task_attempts, pipeline_id=target.id, task_id=task_id)
        out.attempts = [AttemptOut(**vars(row)) for row in earlier] + _latest(record)
    return out


_TERMINAL = frozenset(s.value for s in TERMINAL)


def _wait_s(value: str | None, limits: Limits) -> float:
    """``?wait=``: a duration or seconds, at most ``limits.max_wait_s`` (a minute); a bad
    one is a 422 naming it."""
    if value is None:
        return 0.0
    try:
        seconds = float(value)
    except ValueError:
        seconds = parse_duration(value, field="wait").total_seconds()
    if not 0 <= seconds <= limits.max_wait_s:
        raise ApiError(
            422,
            "invalid_request",
            f"wait: {value!r} is not between 0s and {limits.max_wait_s:g}s; "
            "ask again to wait longer",
        )
    return seconds


def _ended(record: TaskRecord | None) -> bool:
    """A missing row is not an end: with ``wait``, a task just submitted may not be
    admitted yet, and its admission comes before its end."""
    return record is not None and record.status in _TERMINAL


def _latest(record: TaskRecord) -> list[AttemptOut]:
    """The task's current or last attempt, from its row (none while it waits for a first)."""
    if record.started_at is None and record.attempt == 1:
        return []
    if record.status in (Status.SCHEDULED.value, Status.QUEUED.value):
        return []  # the next attempt has not started; the failed ones are in history
    return [
        AttemptOut(
            attempt=record.attempt,
            worker=record.worker,
            started_at=record.started_at,
            ended_at=record.finished_at,
            outcome=record.status,
            error=record.error,
        )
    ]


def _encode_cursor(task_id: str) -> str:
    return base64.urlsafe_b64encode(task_id.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> str:
    invalid = ApiError(
        400, "invalid_cursor", "the cursor is not one this API returned; start without it"
    )
    padded = cursor + "=" * (-len(cursor) % 4)
    try:
        task_id = base64.b64decode(padded, altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as err:
        raise invalid from err
    if not TASK_ID_RE.fullmatch(task_id):
        raise invalid
    return task_id


@router.get("/tasks")
async def list_tasks(
    app: AppName,
    pipeline: PipelineName,
    tenant: CurrentTenant,
    ctx: Ctx,
    status: Status | None = None,
    limit: Annotated[int | None, Query(ge=1)] = None,
    cursor: str | None = None,
    created_after: Annotated[
        str | None,
        Query(description="Only tasks created at or after this RFC 3339 time (with offset)."),
    ] = None,
    created_before: Annotated[
        str | None,
        Query(description="Only tasks created before this RFC 3339 time (with offset)."),
    ] = None,
) -> TaskPage:
    """Tasks ordered by id, a page at a time; pass ``next_cursor`` back for the next (with
    the same filters)."""
    size = min(limit or ctx.limits.default_page_size, ctx.limits.max_page_size)
    after = _decode_cursor(cursor) if cursor else None
    since = parse_run_at(created_after, field="created_after") if created_after else None
    until = parse_run_at(created_before, field="created_before") if created_before else None
    if since is not None and until is not None and since >= until:
        raise ApiError(422, "invalid_request", "created_before: must be later than created_after")
    target = await resolve(ctx, tenant.id, app, pipeline)
    records = await ctx.db(
        ctx.store.list_tasks,
        pipeline_id=target.id,
        status=status.value if status else None,
        after=after,
        limit=size,
        created_from=since,
        created_before=until,
    )
    next_cursor = _encode_cursor(records[-1].id) if len(records) == size else None
    return TaskPage(
        tasks=[TaskSummary(**_summary_fields(r)) for r in records], next_cursor=next_cursor
    )


@router.get("/stats")
async def pipeline_stats(
    app: AppName, pipeline: PipelineName, tenant: CurrentTenant, ctx: Ctx
) -> StatsOut:
    """Counts by status and the backlog, as the scheduler last flushed them."""
    target = await resolve(ctx, tenant.id, app, pipeline)
    stats = (await ctx.db(ctx.store.stats, [target.id])).get(target.id)
    counts = counts_of(stats)
    backlog = counts.pop("backlog", counts.get(Status.QUEUED.value, 0))
    return StatsOut(
        counts={s.value: counts.get(s.value, 0) for s in Status},
        backlog=backlog,
        updated_at=stats.updated_at if stats else None,
    )


# -- cancel and requeue --------------------------------------------------------------------


@router.delete("/tasks/{task_id}", status_code=202)
async def cancel_task(
    app: AppName, pipeline: PipelineName, task_id: TaskIdPath, tenant: CurrentTenant, ctx: Ctx
) -> Accepted:
    """Cancel a task that has not finished. The cancel travels behind the submit on the
    task's partition, so a task still on its way to the scheduler is cancelled too."""
    checked_task_id(task_id)
    target = await resolve(ctx, tenant.id, app, pipeline)
    require_ready(target)
    stored = (await existing_tasks(ctx, target, [task_id])).get(task_id)
    if stored is not None and stored.status in TERMINAL:
        raise ApiError(409, "task_finished", f"task {task_id!r} already finished ({stored.status})")
    await produced(
        ctx, ctx.producer.cancel(target.route, task_id, reason="cancelled by the tenant")
    )
    return Accepted(id=task_id, status="cancelling")


@router.post("/tasks/{task_id}/requeue", status_code=202)
async def requeue_task(
    app: AppName, pipeline: PipelineName, task_id: TaskIdPath, tenant: CurrentTenant, ctx: Ctx
) -> Accepted:
    """Put a ``dead`` task back in the queue with a fresh attempt count."""
    target = await resolve(ctx, tenant.id, app, pipeline)
    require_ready(target)
    record = await ctx.db(ctx.store.get_task, pipeline_id=target.id, task_id=task_id)
    if record is None:
        raise _task_missing(task_id, pipeline)
    if record.status != Status.DEAD.value:
        raise ApiError(
            409,
            "task_not_dead",
            f"task {task_id!r} is {record.status}; only dead tasks can be requeued",
        )
    await produced(ctx, ctx.producer.requeue(target.route, task_id))
    return Accepted(id=task_id, status="requeueing")

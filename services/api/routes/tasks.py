"""Tasks: submit (single and batch), read, list, cancel, requeue, purge; the pipeline's
stats."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import json
import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from actors.pipeline.model import TERMINAL, Status
from actors.pipeline.retry import RetryOverride
from services.api.auth import CurrentTenant
from services.api.context import Ctx
from services.api.errors import TENANT_ERRORS, ApiError, not_found
from services.api.json_depth import too_deep
from services.api.limits import Limits
from services.api.params import AppName, ClientId, IdempotencyKey, PipelineName, TaskIdPath
from services.api.routes.pipelines import counts_of, retry_override
from services.api.schemas import (
    TASK_ID_RE,
    Accepted,
    AttemptOut,
    BatchOut,
    StatsOut,
    SubmitBatch,
    TaskOut,
    TaskPage,
    TaskSummary,
    execution_timeout_s,
)
from services.api.submit import (
    Candidate,
    compact,
    data_too_large,
    digest,
    existing_tasks,
    parse_object,
    plan,
    produced,
    require_ready,
)
from services.api.when import deadline, due_at, parse_duration, parse_run_at
from services.kafka.producer import OutgoingTask
from services.live.hub import wait_until_final
from services.store.control import Pipeline, TaskRecord, Tenant, new_id

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


def _client_id(value: str | None) -> str | None:
    if value is not None and not TASK_ID_RE.fullmatch(value):
        raise ApiError(
            422,
            "invalid_request",
            f"{value[:140]!r} is not a valid task id: use 1 to 128 letters, digits and "
            "'._:~@+=-', starting with a letter or digit",
        )
    return value


RunAt = Annotated[
    str | None,
    Query(
        max_length=64,
        description="When to run it: an RFC 3339 time with its offset. In the past: now.",
        examples=["2026-11-26T12:00:00Z"],
    ),
]
Delay = Annotated[
    str | None,
    Query(
        max_length=64,
        description="Or how long from now: '90s', '15m', '1h30m', ISO 8601 'PT15M'.",
        examples=["15m"],
    ),
]
ExpiresAt = Annotated[
    str | None,
    Query(
        max_length=64,
        description="Deadline (RFC 3339): an attempt not started by then never starts.",
        examples=["2026-11-26T13:00:00Z"],
    ),
]
ExpiresAfter = Annotated[
    str | None,
    Query(max_length=64, description="Or the deadline from now: '10m'.", examples=["10m"]),
]
TimeoutParam = Annotated[
    str | None,
    Query(
        max_length=64,
        description="How long one attempt may run, over the pipeline's: seconds or '15m', "
        "at most 7 days.",
        examples=["15m"],
    ),
]


def _timeout_param(value: str | None) -> float | None:
    """``?execution_timeout=``: seconds or a duration; a bad one is a 422 naming it."""
    if value is None:
        return None
    try:
        number: object = float(value)
    except ValueError:
        number = value
    try:
        return execution_timeout_s(number)
    except ValueError as err:
        raise ApiError(422, "invalid_request", f"execution_timeout: {err}") from err


@router.post(
    "",
    status_code=202,
    response_model=Accepted,
    responses={200: {"model": TaskOut, "description": "The task existed: an idempotent resubmit"}},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    },
)
async def submit_task(
    app: AppName,
    pipeline: PipelineName,
    request: Request,
    tenant: CurrentTenant,
    ctx: Ctx,
    task_id: ClientId = None,
    idempotency_key: IdempotencyKey = None,
    run_at: RunAt = None,
    delay: Delay = None,
    expires_at: ExpiresAt = None,
    expires_after: ExpiresAfter = None,
    max_attempts: Annotated[
        int | None,
        Query(ge=1, le=100, description="This task's attempts, over its pipeline's setting."),
    ] = None,
    execution_timeout: TimeoutParam = None,
) -> JSONResponse:
    """Submit one task: the body (any JSON object) is its data, carried byte for byte.

    With ``run_at`` or ``delay`` the task is ``scheduled`` until it is due, then queued;
    with ``expires_at`` or ``expires_after``, an attempt not started by then never starts.
    """
    when = _When(
        run_at=run_at,
        delay=delay,
        expires_at=expires_at,
        expires_after=expires_after,
        max_attempts=max_attempts,
        execution_timeout=execution_timeout,
    )
    return await submit_one(
        ctx,
        tenant,
        app=app,
        pipeline=pipeline,
        raw=await request.body(),
        task_id=task_id or idempotency_key,
        when=when,
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class _When:
    """A single submit's query parameters other than its id, as FastAPI validated them."""

    run_at: str | None = None
    delay: str | None = None
    expires_at: str | None = None
    expires_after: str | None = None
    max_attempts: int | None = None
    execution_timeout: str | None = None


async def submit_one(
    ctx: Ctx,
    tenant: Tenant,
    *,
    app: str,
    pipeline: str,
    raw: bytes,
    task_id: str | None,
    when: _When = _When(),  # frozen: one shared default is safe
) -> JSONResponse:
    """``POST <pipeline>``'s work once its parameters are read: by ``submit_task`` or,
    without FastAPI's parameter solving, by ``SingleSubmitRoute``."""
    ctx.quotas.refuse_early(tenant)
    parse_object(raw, max_bytes=ctx.limits.max_task_data_bytes)
    due_ms, expires_ms = _times(
        ctx.limits,
        run_at=when.run_at,
        delay=when.delay,
        expires_at=when.expires_at,
        expires_after=when.expires_after,
    )
    timeout_s = _timeout_param(when.execution_timeout)
    target = await resolve(ctx, tenant.id, app, pipeline)
    require_ready(target)
    expires_ms = expires_ms or _default_deadline_ms(target, due_ms)
    client_id = _client_id(task_id)
    task = OutgoingTask(
        id=client_id or new_id(),
        data=raw,
        data_sha256=digest(raw),
        due_at_ms=due_ms,
        expires_at_ms=expires_ms,
        retry=RetryOverride(max_attempts=when.max_attempts) if when.max_attempts else None,
        execution_timeout_s=timeout_s,
    )
    await ctx.quotas.admit_submit(tenant, 1)
    if client_id is not None:
        stored = (await existing_tasks(ctx, target, [client_id])).get(client_id)
        if stored is not None:
            return await _resubmitted(ctx, target, task, stored.data_sha256)
    await produced(ctx, ctx.producer.submit(target.route, [task]))
    ctx.quotas.accepted(tenant, 1)
    ctx.metrics.tasks_created.labels(target.id).inc()
    status = "scheduled" if due_ms else "queued"
    return JSONResponse(Accepted(id=task.id, status=status).model_dump(), status_code=202)


def _times(
    limits: Limits,
    *,
    run_at: str | None,
    delay: str | None,
    expires_at: str | None,
    expires_after: str | None,
    where: str = "",
) -> tuple[int, int]:
    """(due time, deadline) in ms since the epoch, 0 for none; a bad time is a 422 naming
    its field."""
    now = dt.datetime.now(dt.UTC)
    horizon = dt.timedelta(seconds=limits.max_schedule_horizon_s)
    due = due_at(run_at=run_at, delay=delay, now=now, max_horizon=horizon, where=where)
    ends = deadline(
        expires_at=expires_at,
        expires_after=expires_after,
        now=now,
        due=due,
        max_horizon=horizon,
        where=where,
    )
    return _ms(due), _ms(ends)


def _default_deadline_ms(target: Pipeline, due_ms: int) -> int:
    """The pipeline's default deadline for a task given none: that long after it is due."""
    if not target.expires_after_s:
        return 0
    start_ms = due_ms or _ms(dt.datetime.now(dt.UTC))
    return start_ms + target.expires_after_s * 1000


def _ms(when: dt.datetime | None) -> int:
    return 0 if when is None else int(when.timestamp() * 1000)


async def _resubmitted(
    ctx: Ctx, pipeline: Pipeline, task: OutgoingTask, stored_sha256: bytes
) -> JSONResponse:
    if stored_sha256 != task.data_sha256:
        raise ApiError(
            409,
            "task_conflict",
            f"task {task.id!r} already exists with different data; use another id",
        )
    record = await ctx.db(ctx.store.get_task, pipeline_id=pipeline.id, task_id=task.id)
    if record is None:  # deleted (expired) in between: as good as never stored
        raise not_found(f"task {task.id!r} expired while it was being read; submit it again")
    return JSONResponse(task_out(record).model_dump(mode="json"), status_code=200)


@router.post("/tasks", status_code=202)
async def submit_batch(
    app: AppName, pipeline: PipelineName, body: SubmitBatch, tenant: CurrentTenant, ctx: Ctx
) -> BatchOut:
    """Submit up to 10,000 tasks; one result per item, in order.

    Each item's data is re-serialised compactly (see ``submit.compact``); use the
    single-task route to have the exact bytes carried.
    """
    if len(body.tasks) > ctx.limits.max_batch_items:
        raise ApiError(
            413,
            "batch_too_large",
            f"{len(body.tasks)} tasks in one request, over the limit of "
            f"{ctx.limits.max_batch_items}; split the batch",
        )
    ctx.quotas.refuse_early(tenant)
    candidates = _candidates(body, ctx.limits)
    target = await resolve(ctx, tenant.id, app, pipeline)
    require_ready(target)
    candidates = [
        c
        if c.expires_at_ms
        else dataclasses.replace(c, expires_at_ms=_default_deadline_ms(target, c.due_at_ms))
        for c in candidates
    ]
    await ctx.quotas.admit_submit(tenant, len(candidates))
    client_ids = sorted({item.id for item in body.tasks if item.id is not None})
    planned = plan(candidates, await existing_tasks(ctx, target, client_ids))
    if planned.produce:
        await produced(ctx, ctx.producer.submit(target.route, planned.produce))
        ctx.quotas.accepted(tenant, len(planned.produce))
        ctx.metrics.tasks_created.labels(target.id).inc(len(planned.produce))
    results = planned.results
    return BatchOut(
        results=results,
        queued=sum(1 for r in results if r.result == "queued"),
        existing=sum(1 for r in results if r.result == "existing"),
        conflicts=sum(1 for r in results if r.result == "conflict"),
    )


def _candidates(body: SubmitBatch, limits: Limits) -> list[Candidate]:
    candidates = []
    max_bytes = limits.max_task_data_bytes
    for index, item in enumerate(body.tasks):
        data = compact(item.data)
        if len(data) > max_bytes:
            raise data_too_large(len(data), max_bytes, index=index)
        due_ms, expires_ms = _times(
            limits,
            run_at=item.run_at,
            delay=item.delay,
            expires_at=item.expires_at,
            expires_after=item.expires_after,
            where=f"tasks[{index}].",
        )
        candidates.append(
            Candidate(
                index=index,
                id=item.id or new_id(),
                data=data,
                sha256=digest(data),
                due_at_ms=due_ms,
                expires_at_ms=expires_ms,
                retry=retry_override(item.retry, where=f"tasks[{index}]."),
                execution_timeout_s=item.execution_timeout,
            )
        )
    return candidates


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
    _client_id(task_id)
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

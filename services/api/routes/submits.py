"""Tasks: submit one (``POST <pipeline>``) or a batch (``POST <pipeline>/tasks``).

Split from ``tasks.py`` (reads, lists, cancels, requeues and stats), which it shares its
URL prefix with. The single submit's work is ``submit_one``, which the declared route
and ``fast_submit.SingleSubmitRoute`` both call; the batch's,
``submit_plain_batch``, is ``fast_submit.BatchSubmitRoute``'s for the plain form.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from actors.pipeline.retry import RetryOverride
from services.api.auth import CurrentTenant
from services.api.context import Ctx
from services.api.errors import TENANT_ERRORS, ApiError, not_found
from services.api.limits import Limits
from services.api.params import AppName, ClientId, IdempotencyKey, PipelineName
from services.api.routes.pipelines import retry_override
from services.api.routes.tasks import checked_task_id, resolve, task_out
from services.api.schemas import Accepted, BatchOut, SubmitBatch, TaskOut, execution_timeout_s
from services.api.submit import (
    JSON,
    Candidate,
    PlainItem,
    batch_answer,
    compact,
    data_too_large,
    digest,
    existing_tasks,
    item_data,
    parse_object,
    plan,
    produced,
    require_ready,
)
from services.api.when import deadline, due_at
from services.kafka.producer import OutgoingTask
from services.store.control import Pipeline, Tenant, new_id, new_ids

router = APIRouter(
    prefix="/api/applications/{app}/pipelines/{pipeline}", tags=["tasks"], responses=TENANT_ERRORS
)


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
    client_id = checked_task_id(task_id)
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


@router.post("/tasks", status_code=202, response_model=BatchOut)
async def submit_batch(
    app: AppName,
    pipeline: PipelineName,
    body: SubmitBatch,
    request: Request,
    tenant: CurrentTenant,
    ctx: Ctx,
) -> Response:
    """Submit up to 10,000 tasks; one result per item, in order.

    Each item's data is carried as sent, as the single submit carries its body (its
    bytes between the braces, spaces and escapes included): the same data sent with other
    spacing is other data to the idempotency check.
    """
    _check_count(len(body.tasks), ctx.limits)
    ctx.quotas.refuse_early(tenant)
    data = item_data(await request.body(), len(body.tasks))
    candidates = _candidates(body, data, ctx.limits)
    return await _accept(ctx, tenant, app=app, pipeline=pipeline, candidates=candidates)


async def submit_plain_batch(
    ctx: Ctx, tenant: Tenant, *, app: str, pipeline: str, items: Sequence[PlainItem]
) -> Response:
    """``submit_batch``'s work for a body in the plain form (``submit.plain_batch``), which
    ``fast_submit.BatchSubmitRoute`` reads without pydantic."""
    _check_count(len(items), ctx.limits)
    ctx.quotas.refuse_early(tenant)
    max_bytes = ctx.limits.max_task_data_bytes
    candidates = []
    ids = new_ids(sum(1 for item in items if item.id is None))
    for index, item in enumerate(items):
        data = bytes(item.data)
        if len(data) > max_bytes:
            raise data_too_large(len(data), max_bytes, index=index)
        task_id = item.id if item.id is not None else next(ids)
        candidates.append(
            Candidate(
                index=index,
                id=task_id,
                client_id=item.id is not None,
                data=data,
                sha256=digest(data),
            )
        )
    return await _accept(ctx, tenant, app=app, pipeline=pipeline, candidates=candidates)


def _check_count(count: int, limits: Limits) -> None:
    if count > limits.max_batch_items:
        raise ApiError(
            413,
            "batch_too_large",
            f"{count} tasks in one request, over the limit of {limits.max_batch_items}; "
            "split the batch",
        )


async def _accept(
    ctx: Ctx, tenant: Tenant, *, app: str, pipeline: str, candidates: list[Candidate]
) -> Response:
    target = await resolve(ctx, tenant.id, app, pipeline)
    require_ready(target)
    if target.expires_after_s:
        candidates = [
            c
            if c.expires_at_ms
            else dataclasses.replace(c, expires_at_ms=_default_deadline_ms(target, c.due_at_ms))
            for c in candidates
        ]
    await ctx.quotas.admit_submit(tenant, len(candidates))
    client_ids = sorted({c.id for c in candidates if c.client_id})
    planned = plan(candidates, await existing_tasks(ctx, target, client_ids))
    if planned.produce:
        await produced(ctx, ctx.producer.submit(target.route, planned.produce))
        ctx.quotas.accepted(tenant, len(planned.produce))
        ctx.metrics.tasks_created.labels(target.id).inc(len(planned.produce))
    return Response(batch_answer(planned.results), status_code=202, media_type=JSON)


def _candidates(body: SubmitBatch, data: list[bytes] | None, limits: Limits) -> list[Candidate]:
    candidates = []
    max_bytes = limits.max_task_data_bytes
    ids = new_ids(sum(1 for item in body.tasks if item.id is None))
    for index, item in enumerate(body.tasks):
        carried = compact(item.data) if data is None else data[index]
        if len(carried) > max_bytes:
            raise data_too_large(len(carried), max_bytes, index=index)
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
                id=item.id if item.id is not None else next(ids),
                client_id=item.id is not None,
                data=carried,
                sha256=digest(carried),
                due_at_ms=due_ms,
                expires_at_ms=expires_ms,
                retry=retry_override(item.retry, where=f"tasks[{index}]."),
                execution_timeout_s=item.execution_timeout,
            )
        )
    return candidates

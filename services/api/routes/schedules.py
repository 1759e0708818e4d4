"""Schedules: create, read, change, pause, resume, trigger, backfill and delete.

The API writes definitions only. The pipeline's grain fires them (design D4, D5): after
each change the API produces a ``ScheduleChanged`` record on the pipeline's topic and
the grain reads the definition again. A trigger and a backfill are ordinary submits of
runs, with the ids the grain would give them (``<schedule id>@<fire time>``), so a
backfilled fire time that already ran is collapsed by the grain, not run twice.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from actors.pipeline.recurrence import upcoming
from actors.pipeline.schedules import ScheduleSpec, ScheduleState, format_fire, run_id
from services.api.auth import CurrentTenant
from services.api.context import Ctx
from services.api.errors import TENANT_ERRORS, ApiError, not_found
from services.api.params import AppName, PipelineName
from services.api.routes.tasks import resolve
from services.api.schedule_schemas import (
    Backfill,
    Backfilled,
    CountsOut,
    CreateSchedule,
    PatchSchedule,
    RunList,
    RunOut,
    ScheduleList,
    ScheduleOut,
    Triggered,
)
from services.api.schedule_spec import build, invalid
from services.api.schemas import NAME_SCHEMA
from services.api.submit import produced, require_ready
from services.api.when import parse_run_at
from services.kafka.producer import OutgoingTask
from services.store.control import NameTaken, NotFound, Pipeline, ScheduleRecord

router = APIRouter(
    prefix="/api/applications/{app}/pipelines/{pipeline}/schedules",
    tags=["schedules"],
    responses=TENANT_ERRORS,
)
ScheduleName = Annotated[
    str, Path(description="The schedule's name.", json_schema_extra=NAME_SCHEMA)
]
#: Fire times one backfill may run.
MAX_BACKFILL = 1000


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def schedule_out(record: ScheduleRecord, runs: list[RunOut], *, now: dt.datetime) -> ScheduleOut:
    doc, inputs = record.spec, record.spec.get("input", {})
    state = ScheduleState.from_doc(record.state) if record.state else None
    return ScheduleOut(
        id=record.id,
        name=record.name,
        cron=inputs.get("cron"),
        every=inputs.get("every"),
        timezone=doc.get("timezone", "UTC"),
        start_at=doc.get("start_at"),
        end_at=doc.get("end_at"),
        jitter=inputs.get("jitter"),
        data=_data(doc),
        max_runs=doc.get("max_runs"),
        overlap=doc.get("overlap", "allow"),
        catchup=doc.get("catchup", {}),
        paused=record.paused,
        version=record.version,
        created_at=record.created_at.isoformat(),
        updated_at=record.updated_at.isoformat(),
        next_fire_times=_next_fire_times(record, state, now=now),
        last_runs=runs,
        counts=CountsOut(
            fired=state.fired if state else 0,
            skipped=state.skipped if state else 0,
            missed=state.missed if state else 0,
        ),
    )


def _data(doc: dict[str, object]) -> dict[str, object]:
    loaded = json.loads(str(doc.get("data_json", "{}")))
    return loaded if isinstance(loaded, dict) else {}


def _spec(record: ScheduleRecord) -> ScheduleSpec:
    return ScheduleSpec.from_doc(
        id=record.id, name=record.name, version=record.version, paused=False, doc=record.spec
    )


def _next_fire_times(
    record: ScheduleRecord, state: ScheduleState | None, *, now: dt.datetime
) -> list[str]:
    if record.paused or (state is not None and state.next_fire_at is None):
        return []
    spec = _spec(record)
    first = state.next_fire_at if state is not None and state.version == record.version else None
    first = first or spec.first_after(now)
    if first is None:
        return []
    times = [first, *upcoming(spec.rule, after=first, count=4)]
    if spec.end_at is not None:
        times = [t for t in times if t <= spec.end_at]
    if spec.max_runs is not None and state is not None:
        times = times[: max(0, spec.max_runs - state.fired)]
    return [format_fire(t) for t in times]


async def _runs(
    ctx: Ctx,
    record: ScheduleRecord,
    *,
    at: dt.datetime | None = None,
    before: dt.datetime | None = None,
    limit: int = 5,
) -> list[RunOut]:
    runs = await ctx.db(
        ctx.store.schedule_runs,
        pipeline_id=record.pipeline_id,
        schedule_id=record.id,
        at=at,
        before=before,
        limit=limit,
    )
    return [
        RunOut(fire_at=format_fire(r.fire_at), task_id=r.task_id, status=r.status) for r in runs
    ]


async def _find(ctx: Ctx, target: Pipeline, name: str) -> ScheduleRecord:
    record = await ctx.db(ctx.store.get_schedule, pipeline_id=target.id, name=name)
    if record is None:
        raise not_found(f"no schedule named {name!r} in pipeline {target.name!r}")
    return record


async def _changed(ctx: Ctx, target: Pipeline, record: ScheduleRecord) -> None:
    """Tell the firing grain (it also finds changes by itself within a resync period),
    where its pipeline's records go (``target`` is the schedule's pipeline)."""
    await produced(ctx, ctx.producer.schedule_changed(target.route, record.id, record.version))


async def _answer(ctx: Ctx, record: ScheduleRecord) -> ScheduleOut:
    return schedule_out(record, await _runs(ctx, record), now=_now())


@router.post("", status_code=201)
async def create_schedule(
    app: AppName, pipeline: PipelineName, body: CreateSchedule, tenant: CurrentTenant, ctx: Ctx
) -> ScheduleOut:
    """Create a schedule; its first run is at its first fire time after now (or start_at)."""
    target = await resolve(ctx, tenant.id, app, pipeline)
    doc = build(body, base=None, now=_now(), limits=ctx.limits)
    try:
        record = await ctx.db(
            ctx.store.create_schedule,
            pipeline_id=target.id,
            name=body.name,
            spec=doc,
            paused=body.paused,
        )
    except NameTaken as err:
        raise ApiError(409, "name_taken", f"{err}; choose another name or PATCH it") from err
    await _changed(ctx, target, record)
    return schedule_out(record, [], now=_now())


@router.get("")
async def list_schedules(
    app: AppName,
    pipeline: PipelineName,
    tenant: CurrentTenant,
    ctx: Ctx,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> ScheduleList:
    """The pipeline's schedules by name, a page at a time."""
    target = await resolve(ctx, tenant.id, app, pipeline)
    after = _decode_cursor(cursor) if cursor else None
    records = await ctx.db(
        ctx.store.list_schedules, pipeline_id=target.id, after=after, limit=limit
    )
    now = _now()
    out = [schedule_out(r, await _runs(ctx, r), now=now) for r in records]
    last = records[-1].name if len(records) == limit else None
    return ScheduleList(
        schedules=out,
        next_cursor=base64.urlsafe_b64encode(last.encode()).decode() if last else None,
    )


def _decode_cursor(cursor: str) -> str:
    try:
        return base64.urlsafe_b64decode(cursor.encode()).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as err:
        raise invalid("cursor", "not a cursor this API gave out") from err


@router.get("/{schedule}")
async def get_schedule(
    app: AppName, pipeline: PipelineName, schedule: ScheduleName, tenant: CurrentTenant, ctx: Ctx
) -> ScheduleOut:
    """A schedule with its next 5 fire times, last 5 runs and counts."""
    target = await resolve(ctx, tenant.id, app, pipeline)
    return await _answer(ctx, await _find(ctx, target, schedule))


@router.get("/{schedule}/runs")
async def list_runs(
    app: AppName,
    pipeline: PipelineName,
    schedule: ScheduleName,
    tenant: CurrentTenant,
    ctx: Ctx,
    at: Annotated[
        str | None, Query(max_length=64, description="The run of this nominal fire time.")
    ] = None,
    before: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
) -> RunList:
    """The schedule's runs, latest first; ``?at=`` finds the run of one fire time."""
    target = await resolve(ctx, tenant.id, app, pipeline)
    record = await _find(ctx, target, schedule)
    return RunList(
        runs=await _runs(
            ctx,
            record,
            at=parse_run_at(at, field="at") if at is not None else None,
            before=parse_run_at(before, field="before") if before is not None else None,
            limit=limit,
        )
    )


@router.patch("/{schedule}")
async def patch_schedule(
    app: AppName,
    pipeline: PipelineName,
    schedule: ScheduleName,
    body: PatchSchedule,
    tenant: CurrentTenant,
    ctx: Ctx,
) -> ScheduleOut:
    """Change a schedule; a new cron or interval applies from now."""
    target = await resolve(ctx, tenant.id, app, pipeline)
    record = await _find(ctx, target, schedule)
    doc = build(body, base=record.spec, now=_now(), limits=ctx.limits)
    return await _update(ctx, target, record, spec=doc, paused=body.paused)


async def _update(
    ctx: Ctx,
    target: Pipeline,
    record: ScheduleRecord,
    *,
    spec: dict[str, object] | None,
    paused: bool | None,
) -> ScheduleOut:
    try:
        fresh = await ctx.db(ctx.store.update_schedule, record, spec=spec, paused=paused)
    except NotFound as err:
        raise not_found(str(err)) from err
    await _changed(ctx, target, fresh)
    return await _answer(ctx, fresh)


@router.post("/{schedule}:pause")
async def pause_schedule(
    app: AppName, pipeline: PipelineName, schedule: ScheduleName, tenant: CurrentTenant, ctx: Ctx
) -> ScheduleOut:
    """Stop firing until resumed (runs already made go on)."""
    target = await resolve(ctx, tenant.id, app, pipeline)
    return await _update(ctx, target, await _find(ctx, target, schedule), spec=None, paused=True)


@router.post("/{schedule}:resume")
async def resume_schedule(
    app: AppName, pipeline: PipelineName, schedule: ScheduleName, tenant: CurrentTenant, ctx: Ctx
) -> ScheduleOut:
    """Fire again from the next fire time (or catch up, with ``catchup.after_pause``)."""
    target = await resolve(ctx, tenant.id, app, pipeline)
    return await _update(ctx, target, await _find(ctx, target, schedule), spec=None, paused=False)


@router.post("/{schedule}:trigger", status_code=202)
async def trigger_schedule(
    app: AppName, pipeline: PipelineName, schedule: ScheduleName, tenant: CurrentTenant, ctx: Ctx
) -> Triggered:
    """One run now, whatever the schedule's times (also while paused)."""
    target = await resolve(ctx, tenant.id, app, pipeline)
    require_ready(target)
    record = await _find(ctx, target, schedule)
    now = _now()
    fire_at = now.replace(microsecond=now.microsecond // 1000 * 1000)  # what a record keeps
    task = _run(record, fire_at)
    await produced(ctx, ctx.producer.submit(target.route, [task]))
    return Triggered(id=task.id, fire_at=format_fire(fire_at))


@router.post("/{schedule}:backfill", status_code=202)
async def backfill_schedule(
    app: AppName,
    pipeline: PipelineName,
    schedule: ScheduleName,
    body: Backfill,
    tenant: CurrentTenant,
    ctx: Ctx,
) -> Backfilled:
    """Run the fire times in ``[from, to]`` now (those that ran already are not run again)."""
    target = await resolve(ctx, tenant.id, app, pipeline)
    require_ready(target)
    record = await _find(ctx, target, schedule)
    start = parse_run_at(body.from_, field="from")
    end = parse_run_at(body.to, field="to")
    if end < start:
        raise invalid("to", "must not be before from")
    spec = _spec(record)
    times = list(
        upcoming(spec.rule, after=start - dt.timedelta(microseconds=1), count=MAX_BACKFILL + 1)
    )
    times = [t for t in times if t <= end]
    if len(times) > MAX_BACKFILL:
        raise invalid("to", f"more than {MAX_BACKFILL} fire times; backfill a shorter range")
    tasks = [_run(record, t) for t in times]
    if tasks:
        await produced(ctx, ctx.producer.submit(target.route, tasks))
    return Backfilled(runs=len(tasks), task_ids=[t.id for t in tasks])


def _run(record: ScheduleRecord, fire_at: dt.datetime) -> OutgoingTask:
    data = str(record.spec.get("data_json", "{}")).encode()
    return OutgoingTask(
        id=run_id(record.id, fire_at),
        data=data,
        data_sha256=hashlib.sha256(data).digest(),
        schedule_id=record.id,
        fire_at_ms=int(fire_at.timestamp() * 1000),
    )


@router.delete("/{schedule}", status_code=204)
async def delete_schedule(
    app: AppName, pipeline: PipelineName, schedule: ScheduleName, tenant: CurrentTenant, ctx: Ctx
) -> Response:
    """Delete a schedule; its runs stay as tasks. A new one of the same name is new."""
    target = await resolve(ctx, tenant.id, app, pipeline)
    record = await _find(ctx, target, schedule)
    await ctx.db(ctx.store.delete_schedule, record)
    await _changed(ctx, target, record)
    return Response(status_code=204)

"""Pipelines: created, listed, changed and deleted by their tenant.

The routes only write the row; the reconciler does the slow work (topic, deployment,
placement) and moves the state on: provisioning -> ready | failed -> deleting.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter

from actors.pipeline.retry import Backoff, RetryOverride
from services.api.auth import CurrentTenant
from services.api.context import Ctx
from services.api.errors import TENANT_ERRORS, ApiError, not_found
from services.api.lifecycle_schemas import Rotate, TokenRotated
from services.api.params import AppName, PipelineName
from services.api.routes.applications import find_application
from services.api.schemas import (
    CreatePipeline,
    PatchPipeline,
    PipelineCreated,
    PipelineDeleting,
    PipelineList,
    PipelineOut,
    RetryIn,
)
from services.deploy.helm import ChartNotAllowed
from services.kafka.producer import BrokerUnavailable
from services.placement import TopicMode
from services.store.control import (
    Application,
    NameTaken,
    NotFound,
    Pipeline,
    PipelineChanges,
    PipelineSpec,
    PipelineStats,
    TokenUnavailable,
)

log = logging.getLogger("wsched.api.pipelines")

router = APIRouter(
    prefix="/api/applications/{app}/pipelines", tags=["pipelines"], responses=TENANT_ERRORS
)


def counts_of(stats: PipelineStats | None) -> dict[str, int]:
    if stats is None:
        return {}
    return {name: int(value) for name, value in stats.counts.items()}


def max_attempts(top: int | None, retry: RetryIn | None) -> int | None:
    """``max_attempts`` given at the top or in ``retry``: one setting, two spellings."""
    inner = retry.max_attempts if retry is not None else None
    if top is not None and inner is not None and top != inner:
        raise ApiError(
            422,
            "invalid_request",
            f"max_attempts ({top}) and retry.max_attempts ({inner}) disagree; give one",
        )
    return inner if inner is not None else top


def backoff_of(retry: RetryIn | None, *, where: str = "") -> dict[str, float] | None:
    """The backoff to store: ``Backoff``'s field names, checked by building one."""
    if retry is None or retry.backoff is None:
        return None
    given = retry.backoff
    fields = {
        "initial_s": given.initial,
        "multiplier": given.multiplier,
        "max_s": given.max,
        "jitter": given.jitter,
    }
    try:
        Backoff(**fields)
    except ValueError as err:
        raise ApiError(422, "invalid_request", f"{where}retry.backoff: {err}") from err
    if given.max < given.initial:
        raise ApiError(422, "invalid_request", f"{where}retry.backoff: max is shorter than initial")
    return fields


def retry_override(retry: RetryIn | None, *, where: str = "") -> RetryOverride | None:
    """A task's own retry policy from its ``retry`` (None: the pipeline's)."""
    if retry is None:
        return None
    backoff = backoff_of(retry, where=where)
    return RetryOverride(
        max_attempts=retry.max_attempts, backoff=Backoff(**backoff) if backoff else None
    )


def _span(seconds: float | None) -> int | None:
    """Whole seconds of a given span; None when not given (0 stays 0: cleared)."""
    return None if seconds is None else max(1, round(seconds)) if seconds else 0


def topic_of(body: CreatePipeline, default: TopicMode) -> tuple[TopicMode, int]:
    """The pipeline's topic and its partitions. Not asked for: a pipeline that asks for
    more than one partition gets a topic of its own (it is a big one), any other the
    operator's ``default``. A shared pipeline has one partition, its shard's of the shared
    topic, so asking for shared and more partitions is an error rather than a setting
    silently dropped."""
    asked_partitions = "partitions" in body.model_fields_set and body.partitions != 1
    if body.topic is None:
        mode = TopicMode.DEDICATED if asked_partitions else default
    else:
        mode = TopicMode(body.topic)
    if mode is TopicMode.DEDICATED:
        return mode, body.partitions
    if asked_partitions:
        raise ApiError(
            422,
            "invalid_request",
            f"partitions: a pipeline on the shared topic has 1 partition, its shard's, not "
            f'{body.partitions}; leave partitions out, or choose topic "dedicated" for a '
            "topic of its own with more",
        )
    return mode, 1


def retry_out(pipeline: Pipeline) -> dict[str, Any]:
    backoff = Backoff(**pipeline.backoff) if pipeline.backoff else Backoff()
    return {"max_attempts": pipeline.max_attempts, "backoff": dataclasses.asdict(backoff)}


def pipeline_out(
    pipeline: Pipeline, *, application: str, stats: Mapping[str, PipelineStats]
) -> PipelineOut:
    return PipelineOut(
        id=pipeline.id,
        name=pipeline.name,
        application=application,
        chart=pipeline.chart,
        chart_version=pipeline.chart_version,
        values=dict(pipeline.values),
        partitions=pipeline.partitions,
        scaling=dict(pipeline.scaling),
        max_attempts=pipeline.max_attempts,
        retry=retry_out(pipeline),
        lease_timeout_s=pipeline.lease_timeout_s,
        retention_s=pipeline.retention_s,
        expires_after_s=pipeline.expires_after_s,
        execution_timeout_s=pipeline.execution_timeout_s,
        state=pipeline.state.value,
        reason=pipeline.state_reason,
        deployment=dict(pipeline.deployment),
        topic_mode=pipeline.topic_mode.value,
        topic=pipeline.topic,
        counts=counts_of(stats.get(pipeline.id)),
        created_at=pipeline.created_at,
        updated_at=pipeline.updated_at,
    )


async def check_chart(ctx: Ctx, chart: str | None) -> None:
    """422 for a chart outside the operator's allow-list, naming the setting."""
    if chart is None or ctx.charts is None:
        return
    try:
        await asyncio.to_thread(ctx.charts.check, chart)
    except ChartNotAllowed as err:
        raise ApiError(422, "chart_not_allowed", str(err)) from err


async def find_pipeline(ctx: Ctx, application: Application, name: str) -> Pipeline:
    pipeline = await ctx.db(ctx.store.get_pipeline, application_id=application.id, name=name)
    if pipeline is None:
        raise not_found(
            f"no pipeline named {name!r} in application {application.name!r}; "
            f"GET /api/applications/{application.name}/pipelines lists them"
        )
    return pipeline


@router.post("", status_code=201)
async def create_pipeline(
    app: AppName, body: CreatePipeline, tenant: CurrentTenant, ctx: Ctx
) -> PipelineCreated:
    """Create a pipeline (state ``provisioning``); its worker token is in this answer only."""
    application = await find_application(ctx, tenant.id, app)
    mode, partitions = topic_of(body, ctx.settings.pipeline_topic)
    await check_chart(ctx, body.chart)
    if ctx.quotas.of(tenant).max_pipelines is not None:
        live = await ctx.db(ctx.store.count_live_pipelines, tenant.id)
        ctx.quotas.check_pipelines(tenant, live)
    spec = PipelineSpec(
        name=body.name,
        chart=body.chart,
        chart_version=body.chart_version,
        values=body.values,
        partitions=partitions,
        topic_mode=mode,
        scaling=body.scaling,
        max_attempts=max_attempts(body.max_attempts, body.retry) or 3,
        backoff=backoff_of(body.retry) or {},
        expires_after_s=_span(body.expires_after) or None,
        execution_timeout_s=body.execution_timeout or None,
        lease_timeout_s=body.lease_timeout_s,
        retention_s=body.retention,
    )
    try:
        pipeline, token = await ctx.db(ctx.store.create_pipeline, app=application, spec=spec)
    except NameTaken as err:
        raise ApiError(409, "name_taken", f"{err}; choose another name") from err
    # A pipeline of this name deleted a moment ago may still be remembered.
    ctx.forget_pipeline(tenant_id=tenant.id, application=application.name, name=body.name)
    ctx.nudge(pipeline.id)
    out = pipeline_out(pipeline, application=application.name, stats={})
    return PipelineCreated(**out.model_dump(), worker_token=token)


@router.get("")
async def list_pipelines(app: AppName, tenant: CurrentTenant, ctx: Ctx) -> PipelineList:
    """The application's pipelines, including those being deleted."""
    application = await find_application(ctx, tenant.id, app)
    pipelines = await ctx.db(ctx.store.list_pipelines, application_id=application.id)
    stats = await ctx.db(ctx.store.stats, [p.id for p in pipelines])
    return PipelineList(
        pipelines=[pipeline_out(p, application=application.name, stats=stats) for p in pipelines]
    )


@router.get("/{pipeline}")
async def get_pipeline(
    app: AppName, pipeline: PipelineName, tenant: CurrentTenant, ctx: Ctx
) -> PipelineOut:
    application = await find_application(ctx, tenant.id, app)
    found = await find_pipeline(ctx, application, pipeline)
    stats = await ctx.db(ctx.store.stats, [found.id])
    return pipeline_out(found, application=application.name, stats=stats)


@router.patch("/{pipeline}")
async def patch_pipeline(
    app: AppName, pipeline: PipelineName, body: PatchPipeline, tenant: CurrentTenant, ctx: Ctx
) -> PipelineOut:
    """Change a pipeline's chart or settings; the chart is redeployed in the background.

    A ``failed`` pipeline is provisioned again: patching is how a failure is fixed.
    """
    application = await find_application(ctx, tenant.id, app)
    found = await find_pipeline(ctx, application, pipeline)
    await check_chart(ctx, body.chart)
    changes = PipelineChanges(
        chart=body.chart,
        chart_version=body.chart_version,
        values=body.values,
        scaling=body.scaling,
        max_attempts=max_attempts(body.max_attempts, body.retry),
        backoff=backoff_of(body.retry),
        expires_after_s=_span(body.expires_after),
        execution_timeout_s=body.execution_timeout,
        lease_timeout_s=body.lease_timeout_s,
        retention_s=body.retention,
    )
    try:
        updated = await ctx.db(ctx.store.update_pipeline, found, changes)
    except NotFound as err:
        raise not_found(str(err)) from err
    ctx.forget_pipeline(tenant_id=tenant.id, application=app, name=pipeline)
    ctx.nudge(updated.id)
    stats = await ctx.db(ctx.store.stats, [updated.id])
    return pipeline_out(updated, application=application.name, stats=stats)


@router.delete("/{pipeline}", status_code=202)
async def delete_pipeline(
    app: AppName, pipeline: PipelineName, tenant: CurrentTenant, ctx: Ctx
) -> PipelineDeleting:
    """Start deleting: the name is free at once; workers, topic and tasks go in the
    background."""
    application = await find_application(ctx, tenant.id, app)
    found = await find_pipeline(ctx, application, pipeline)
    if not await ctx.db(ctx.store.start_deleting, found.id):
        raise not_found(f"pipeline {pipeline!r} is already being deleted")
    ctx.forget_pipeline(tenant_id=tenant.id, application=app, name=pipeline)
    ctx.nudge(found.id)
    return PipelineDeleting(id=found.id, state="deleting")


@router.post("/{pipeline}/rotate-token")
async def rotate_token(
    app: AppName, pipeline: PipelineName, body: Rotate, tenant: CurrentTenant, ctx: Ctx
) -> TokenRotated:
    """A new worker token, in this answer only. The workers are deployed again with it in
    the background; the current token stays valid for ``grace_s`` (for the workers still
    running with it: give the redeploy time to finish), and no longer on any scheduler
    replica once the rotation has reached it (``wsched.revocations``)."""
    application = await find_application(ctx, tenant.id, app)
    found = await find_pipeline(ctx, application, pipeline)
    grace = dt.timedelta(seconds=body.grace_s)
    try:
        updated, token = await ctx.db(ctx.store.rotate_worker_token, found, grace=grace)
    except NotFound as err:
        raise not_found(str(err)) from err
    except TokenUnavailable as err:
        raise ApiError(409, "token_unavailable", str(err)) from err
    ctx.nudge(updated.id)
    await _announce_rotation(ctx, updated.id)
    until = ctx.wall_clock() + grace if body.grace_s else None
    return TokenRotated(worker_token=token, previous_token_valid_until=until)


async def _announce_rotation(ctx: Ctx, pipeline_id: str) -> None:
    """Tell every scheduler replica to read the pipeline's token digests again. Kafka not
    taking it is no failure of the rotation: the replicas' caches expire anyway (30 s)."""
    try:
        await ctx.revocations.announce_rotation(pipeline_id)
    except BrokerUnavailable as err:
        log.warning("pipeline %s: worker token rotation not announced: %s", pipeline_id, err)

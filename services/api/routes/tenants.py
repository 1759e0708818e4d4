"""Tenants: created, listed, given quotas, their keys rotated or revoked, and deleted by
the operator; a tenant reads its own.

A change to a tenant's keys is announced on ``wsched.revocations`` once it is in the
database, so that every API process forgets what it remembered of the tenant (what it
answers from while the database is down). Deleting a tenant only records the deletion
and refuses its keys; the reconciler does the work (``services.api.tenant_deletion``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
from typing import Annotated, Literal

from fastapi import APIRouter, Path

from services.api.auth import CurrentTenant, Operator
from services.api.context import ApiContext, Ctx
from services.api.errors import (
    OPERATOR_ERRORS,
    TENANT_ERRORS,
    ApiError,
    error_responses,
    not_found,
)
from services.api.lifecycle_schemas import (
    DeletionOut,
    KeyRotated,
    KeysRevoked,
    Rotate,
    TenantDetail,
    TenantState,
)
from services.api.quota_schemas import PatchTenant, QuotaValues, TenantQuotasOut, UsageOut
from services.api.schemas import NAME_SCHEMA, CreateTenant, TenantCreated, TenantList, TenantOut
from services.deploy.naming import namespace_for, spare_namespace
from services.kafka.producer import BrokerUnavailable
from services.store.control import STEP_DONE, NameTaken, NotFound, Tenant, TenantDeletion

log = logging.getLogger("wsched.api.tenants")

router = APIRouter(
    prefix="/api/tenants", tags=["tenants"], dependencies=[Operator], responses=OPERATOR_ERRORS
)
#: The calling tenant's own view.
own = APIRouter(prefix="/api/tenant", tags=["tenants"], responses=TENANT_ERRORS)

TenantName = Annotated[str, Path(description="The tenant's name.", json_schema_extra=NAME_SCHEMA)]

NOT_FOUND = error_responses(404)


@router.post("", status_code=201)
async def create_tenant(body: CreateTenant, ctx: Ctx) -> TenantCreated:
    """Create a tenant; its API key is in this answer only."""
    namespace = None
    if await ctx.db(ctx.store.namespace_retired, namespace_for(body.name)):
        # A deleted tenant of this name had it, and it may still be terminating.
        namespace = spare_namespace(body.name)
    try:
        tenant, api_key = await ctx.db(ctx.store.create_tenant, body.name, namespace=namespace)
    except NameTaken as err:
        raise ApiError(409, "name_taken", f"{err}; choose another name") from err
    return TenantCreated(
        id=tenant.id, name=tenant.name, created_at=tenant.created_at, api_key=api_key
    )


@router.get("")
async def list_tenants(ctx: Ctx) -> TenantList:
    tenants = await ctx.db(ctx.store.list_tenants)
    return TenantList(
        tenants=[TenantOut(id=t.id, name=t.name, created_at=t.created_at) for t in tenants]
    )


@router.get("/{tenant}", responses=NOT_FOUND)
async def get_tenant(tenant: TenantName, ctx: Ctx) -> TenantDetail:
    """A tenant with its quotas (in force, and its own overrides), its usage, its state
    and, once it is being deleted, how far its deletion got."""
    found = await ctx.db(ctx.store.tenant_by_name, tenant)
    if found is None:
        gone = await ctx.db(ctx.store.tenant_deletion_named, tenant)
        if gone is not None and gone.finished_at is not None:
            raise not_found(f"tenant {tenant!r} was deleted at {gone.finished_at.isoformat()}")
        raise _no_tenant(tenant)
    deletion = await ctx.db(ctx.store.tenant_deletion, found.id)
    state = _state(found.id, found.name, found.created_at, deletion)
    detail = await quotas_out(ctx, found)
    return TenantDetail(**detail.model_dump(), state=state.state, deletion=state.deletion)


@router.patch("/{tenant}", responses=error_responses(404))
async def patch_tenant(tenant: TenantName, body: PatchTenant, ctx: Ctx) -> TenantQuotasOut:
    """Override the tenant's quotas: a quota left out is unchanged, null returns it to
    the default (``WSCHED_QUOTA_*``), 0 makes it unbounded. Every API process applies the
    change within ``WSCHED_LOOKUP_CACHE_S`` (this one at once)."""
    found = await _named(ctx, tenant)
    changes = {name: getattr(body.quotas, name) for name in body.quotas.model_fields_set}
    overrides = dataclasses.replace(found.quotas, **changes)
    updated = await ctx.db(ctx.store.set_tenant_quotas, found.id, overrides)
    if updated is None:
        raise not_found(f"tenant {tenant!r} was deleted meanwhile")
    ctx.quotas_changed(updated)
    return await quotas_out(ctx, updated)


@own.get("")
async def get_own(tenant: CurrentTenant, ctx: Ctx) -> TenantQuotasOut:
    """The calling tenant, its quotas and its usage."""
    return await quotas_out(ctx, tenant)


async def _named(ctx: Ctx, name: str) -> Tenant:
    found = await ctx.db(ctx.store.tenant_by_name, name)
    if found is None:
        raise _no_tenant(name)
    return found


async def quotas_out(ctx: ApiContext, tenant: Tenant) -> TenantQuotasOut:
    pipelines, backlog = await asyncio.gather(
        ctx.db(ctx.store.count_live_pipelines, tenant.id),
        ctx.db(ctx.store.tenant_backlog, tenant.id),
    )
    return TenantQuotasOut(
        id=tenant.id,
        name=tenant.name,
        created_at=tenant.created_at,
        quotas=QuotaValues(**dataclasses.asdict(ctx.quotas.of(tenant))),
        overrides=QuotaValues(**dataclasses.asdict(tenant.quotas)),
        usage=UsageOut(pipelines=pipelines, backlog=backlog),
    )


@router.post("/{tenant}/rotate-key", responses=NOT_FOUND)
async def rotate_key(tenant: TenantName, body: Rotate, ctx: Ctx) -> KeyRotated:
    """A new API key, in this answer only; the current one stays valid for ``grace_s``."""
    found = await _live_tenant(ctx, tenant)
    grace = dt.timedelta(seconds=body.grace_s)
    try:
        key = await ctx.db(ctx.store.rotate_key, found.id, grace=grace)
    except NotFound as err:
        raise ApiError(409, "conflict", f"{err}") from err
    until = ctx.wall_clock() + grace if body.grace_s else None
    await _announce(ctx, found.id, until=until)
    return KeyRotated(api_key=key, previous_key_valid_until=until)


@router.post("/{tenant}/revoke-key", responses=NOT_FOUND)
async def revoke_key(tenant: TenantName, ctx: Ctx) -> KeysRevoked:
    """Refuse every key of the tenant, on every API process within seconds (also while
    the database is down); ``rotate-key`` then issues a new one."""
    found = await _live_tenant(ctx, tenant)
    try:
        await ctx.db(ctx.store.revoke_keys, found.id)
    except NotFound as err:
        raise _no_tenant(tenant) from err
    announced = await _announce(ctx, found.id)
    detail = "every key of the tenant is refused; POST .../rotate-key issues a new one"
    if not announced:
        detail += (
            " (Kafka did not take the announcement: other API processes refuse the key "
            "once they read the database, not from what they remember while it is down)"
        )
    return KeysRevoked(detail=detail)


@router.delete("/{tenant}", status_code=202, responses=NOT_FOUND)
async def delete_tenant(tenant: TenantName, ctx: Ctx) -> TenantState:
    """Start deleting the tenant (again, harmlessly, if under way): its keys are refused
    at once; its pipelines (workers, topics, tasks), namespace and rows go in the
    background. ``GET /api/tenants/{tenant}`` shows the progress."""
    found = await _named(ctx, tenant)
    try:
        deletion = await ctx.db(
            ctx.store.start_tenant_deletion, found.id, default_namespace=namespace_for(found.name)
        )
    except NotFound as err:  # an earlier deletion finished since the lookup above
        raise _no_tenant(tenant) from err
    await _announce(ctx, found.id)
    ctx.nudge_tenant(found.id)
    return _state(found.id, found.name, found.created_at, deletion)


async def _live_tenant(ctx: Ctx, name: str) -> Tenant:
    found = await _named(ctx, name)
    if await ctx.db(ctx.store.tenant_deletion, found.id) is not None:
        raise ApiError(409, "tenant_deleting", f"tenant {name!r} is being deleted")
    return found


async def _announce(ctx: Ctx, tenant_id: str, *, until: dt.datetime | None = None) -> bool:
    """Tell every API process (this one at once) that the tenant's keys changed, and
    until when a rotated-out one holds; False when Kafka did not take it."""
    ctx.forget_tenant(tenant_id, until)
    try:
        await ctx.revocations.announce(tenant_id, until=until)
    except BrokerUnavailable as err:
        log.warning("tenant %s: key change not announced: %s", tenant_id, err)
        return False
    return True


def _no_tenant(name: str) -> ApiError:
    return not_found(f"no tenant named {name!r}; GET /api/tenants lists them")


def _state(
    tenant_id: str, name: str, created_at: dt.datetime, deletion: TenantDeletion | None
) -> TenantState:
    if deletion is None:
        return TenantState(id=tenant_id, name=name, created_at=created_at, state="active")
    out = DeletionOut(
        step=deletion.step,  # type: ignore[arg-type]  # one of the three steps
        pipelines_left=deletion.pipelines_left if deletion.pipelines_left >= 0 else None,
        namespace=deletion.namespace,
        detail=deletion.detail,
        started_at=deletion.started_at,
        updated_at=deletion.updated_at,
        finished_at=deletion.finished_at,
    )
    state: Literal["deleting", "deleted"] = "deleted" if deletion.step == STEP_DONE else "deleting"
    return TenantState(id=tenant_id, name=name, created_at=created_at, state=state, deletion=out)

"""Tenants: created, listed and given quotas by the operator; a tenant reads its own."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Annotated

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
from services.api.quota_schemas import PatchTenant, QuotaValues, TenantQuotasOut, UsageOut
from services.api.schemas import NAME_SCHEMA, CreateTenant, TenantCreated, TenantList, TenantOut
from services.store.control import NameTaken, Tenant

router = APIRouter(
    prefix="/api/tenants", tags=["tenants"], dependencies=[Operator], responses=OPERATOR_ERRORS
)
#: The calling tenant's own view.
own = APIRouter(prefix="/api/tenant", tags=["tenants"], responses=TENANT_ERRORS)

TenantName = Annotated[str, Path(description="The tenant's name.", json_schema_extra=NAME_SCHEMA)]


@router.post("", status_code=201)
async def create_tenant(body: CreateTenant, ctx: Ctx) -> TenantCreated:
    """Create a tenant; its API key is in this answer only."""
    try:
        tenant, api_key = await ctx.db(ctx.store.create_tenant, body.name)
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


@router.get("/{tenant}", responses=error_responses(404))
async def get_tenant(tenant: TenantName, ctx: Ctx) -> TenantQuotasOut:
    """A tenant with its quotas (in force, and its own overrides) and its usage."""
    return await quotas_out(ctx, await _named(ctx, tenant))


@router.patch("/{tenant}", responses=error_responses(404))
async def patch_tenant(tenant: TenantName, body: PatchTenant, ctx: Ctx) -> TenantQuotasOut:
    """Override the tenant's quotas: a quota left out is unchanged, null returns it to
    the default (``WSCHED_QUOTA_*``), 0 makes it unbounded. Every API process applies the
    change with the tenant's next request."""
    found = await _named(ctx, tenant)
    changes = {name: getattr(body.quotas, name) for name in body.quotas.model_fields_set}
    overrides = dataclasses.replace(found.quotas, **changes)
    updated = await ctx.db(ctx.store.set_tenant_quotas, found.id, overrides)
    if updated is None:
        raise not_found(f"tenant {tenant!r} was deleted meanwhile")
    return await quotas_out(ctx, updated)


@own.get("")
async def get_own(tenant: CurrentTenant, ctx: Ctx) -> TenantQuotasOut:
    """The calling tenant, its quotas and its usage."""
    return await quotas_out(ctx, tenant)


async def _named(ctx: Ctx, name: str) -> Tenant:
    found = await ctx.db(ctx.store.tenant_by_name, name)
    if found is None:
        raise not_found(f"no tenant named {name!r}; GET /api/tenants lists them")
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

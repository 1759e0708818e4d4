"""Tenants: created and listed by the operator."""

from __future__ import annotations

from fastapi import APIRouter

from services.api.auth import Operator
from services.api.context import Ctx
from services.api.errors import OPERATOR_ERRORS, ApiError
from services.api.schemas import CreateTenant, TenantCreated, TenantList, TenantOut
from services.store.control import NameTaken

router = APIRouter(
    prefix="/api/tenants", tags=["tenants"], dependencies=[Operator], responses=OPERATOR_ERRORS
)


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

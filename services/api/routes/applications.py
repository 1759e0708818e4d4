"""Applications: a tenant's groups of pipelines."""

from __future__ import annotations

from fastapi import APIRouter, Response

from services.api.auth import CurrentTenant
from services.api.context import Ctx
from services.api.errors import TENANT_ERRORS, ApiError, not_found
from services.api.params import AppName
from services.api.schemas import ApplicationList, ApplicationOut, CreateApplication
from services.store.control import Application, HasPipelines, NameTaken

router = APIRouter(prefix="/api/applications", tags=["applications"], responses=TENANT_ERRORS)


def _out(app: Application) -> ApplicationOut:
    return ApplicationOut(id=app.id, name=app.name, created_at=app.created_at)


async def find_application(ctx: Ctx, tenant_id: str, name: str) -> Application:
    """The tenant's application; another tenant's answers 404 like a missing one."""
    app = await ctx.db(ctx.store.get_application, tenant_id=tenant_id, name=name)
    if app is None:
        raise not_found(f"no application named {name!r}; GET /api/applications lists yours")
    return app


@router.post("", status_code=201)
async def create_application(
    body: CreateApplication, tenant: CurrentTenant, ctx: Ctx
) -> ApplicationOut:
    try:
        app = await ctx.db(ctx.store.create_application, tenant_id=tenant.id, name=body.name)
    except NameTaken as err:
        raise ApiError(409, "name_taken", f"{err}; choose another name") from err
    return _out(app)


@router.get("")
async def list_applications(tenant: CurrentTenant, ctx: Ctx) -> ApplicationList:
    apps = await ctx.db(ctx.store.list_applications, tenant_id=tenant.id)
    return ApplicationList(applications=[_out(app) for app in apps])


@router.get("/{app}")
async def get_application(app: AppName, tenant: CurrentTenant, ctx: Ctx) -> ApplicationOut:
    return _out(await find_application(ctx, tenant.id, app))


@router.delete("/{app}", status_code=204)
async def delete_application(app: AppName, tenant: CurrentTenant, ctx: Ctx) -> Response:
    """Delete an application without pipelines."""
    found = await find_application(ctx, tenant.id, app)
    try:
        await ctx.db(ctx.store.delete_application, found)
    except HasPipelines as err:
        raise ApiError(409, "has_pipelines", str(err)) from err
    return Response(status_code=204)

"""The dashboard's own routes: its page and assets, signing in and out, the operator's
tenant picker and overview. Everything else the pages show comes from the JSON API's
routes, which accept the session cookie (see services.api.auth)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse
from pydantic import BaseModel, ConfigDict, Field

from services.api.auth import is_operator_digest, same_origin, session_of, session_tenant
from services.api.context import Ctx
from services.api.errors import ApiError
from services.api.routes.pipelines import pipeline_out
from services.api.schemas import PipelineOut, TenantOut
from services.api.ui.session import COOKIE, Session, new_csrf
from services.store.control import Tenant, hash_secret

STATIC = Path(__file__).parent / "static"

# Out of the OpenAPI: these routes serve the dashboard's pages (cookie sessions), not API
# clients, which use Bearer keys on the documented routes.
router = APIRouter(prefix="/ui", tags=["dashboard"], include_in_schema=False)


class SignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: str = Field(min_length=1, max_length=512, description="A tenant's or the operator's key.")


class PickTenant(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tenant_id: str = Field(min_length=1, max_length=64)


class SessionOut(BaseModel):
    kind: str
    tenant: TenantOut | None
    csrf: str = Field(description="Send as X-CSRF-Token on every state-changing call.")


class OverviewRow(BaseModel):
    tenant: str
    pipeline: PipelineOut


class Overview(BaseModel):
    pipelines: list[OverviewRow]


@router.get("")
async def index() -> FileResponse:
    """The one page; it routes by the URL's fragment, which never reaches a server."""
    return FileResponse(STATIC / "index.html", media_type="text/html")


@router.get("/")
async def index_slash() -> RedirectResponse:
    return RedirectResponse("/ui", status_code=308)


@router.post("/session")
async def sign_in(body: SignIn, request: Request, ctx: Ctx) -> JSONResponse:
    """Trade a key for a session cookie; the key itself is kept nowhere."""
    if not same_origin(request):
        raise ApiError(403, "csrf_failed", "sign in from this site's own page")
    digest = hash_secret(body.key)
    tenant = await ctx.tenant_by_key_digest(digest)
    if tenant is not None:
        session = Session(kind="tenant", key_digest=digest, csrf=new_csrf(), tenant_id=tenant.id)
    elif is_operator_digest(ctx, digest):
        session = Session(kind="operator", key_digest=digest, csrf=new_csrf())
    else:
        raise ApiError(401, "unauthorized", "the key is not valid; check it and try again")
    return _with_cookie(request, ctx, session, tenant)


@router.get("/session")
async def who(request: Request, ctx: Ctx) -> SessionOut:
    """Who is signed in, and the CSRF token the page keeps in memory."""
    session = session_of(request, ctx)
    tenant = await _checked_tenant(ctx, session)
    return _session_out(session, tenant)


@router.delete("/session", status_code=204)
async def sign_out(request: Request, ctx: Ctx) -> Response:
    session_of(request, ctx)  # CSRF-checked: another site cannot sign a user out
    response = Response(status_code=204)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return response


@router.put("/session/tenant")
async def pick_tenant(body: PickTenant, request: Request, ctx: Ctx) -> JSONResponse:
    """The operator looks at one tenant (read only) from now on."""
    session = session_of(request, ctx)
    if not (session.is_operator and is_operator_digest(ctx, session.key_digest)):
        raise ApiError(403, "forbidden", "only the operator picks a tenant")
    tenant = await ctx.db(ctx.store.get_tenant, body.tenant_id)
    if tenant is None:
        raise ApiError(404, "not_found", "no such tenant; GET /api/tenants lists them")
    picked = Session(
        kind="operator", key_digest=session.key_digest, csrf=session.csrf, tenant_id=tenant.id
    )
    return _with_cookie(request, ctx, picked, tenant)


@router.get("/overview")
async def overview(request: Request, ctx: Ctx) -> Overview:
    """Every tenant's pipelines, their state, deployment and counts: the operator's view."""
    session = session_of(request, ctx)
    if not (session.is_operator and is_operator_digest(ctx, session.key_digest)):
        raise ApiError(403, "forbidden", "the overview of every tenant is the operator's")
    rows = await ctx.db(ctx.store.all_pipelines)
    stats = await ctx.db(ctx.store.stats, [p.id for _, _, p in rows])
    return Overview(
        pipelines=[
            OverviewRow(tenant=tenant, pipeline=pipeline_out(p, application=app, stats=stats))
            for tenant, app, p in rows
        ]
    )


async def _checked_tenant(ctx: Ctx, session: Session) -> Tenant | None:
    tenant = await session_tenant(ctx, session)
    if tenant is None and not session.is_operator:
        raise ApiError(401, "session_expired", "the key of this session is no longer valid")
    if session.is_operator and not is_operator_digest(ctx, session.key_digest):
        raise ApiError(401, "session_expired", "the operator key changed; sign in again")
    return tenant


def _session_out(session: Session, tenant: Tenant | None) -> SessionOut:
    out = (
        TenantOut(id=tenant.id, name=tenant.name, created_at=tenant.created_at) if tenant else None
    )
    return SessionOut(kind=session.kind, tenant=out, csrf=session.csrf)


def _with_cookie(
    request: Request, ctx: Ctx, session: Session, tenant: Tenant | None
) -> JSONResponse:
    secure = ctx.settings.ui_secure_cookie
    response = JSONResponse(_session_out(session, tenant).model_dump(mode="json"))
    response.set_cookie(
        COOKIE,
        ctx.sessions.seal(session),
        max_age=ctx.sessions.ttl_s,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https" if secure is None else secure,
    )
    return response

"""Who is calling: a Bearer key, or the dashboard's session cookie.

The operator key (from settings) manages tenants; a tenant's API key manages that
tenant's applications, pipelines and tasks. The dashboard's pages call these same routes
with their session cookie instead of a key (one set of routes, one set of checks, no
second API to keep in step); a cookie is only taken when no Authorization header is sent,
and a state-changing call made with it must carry the session's CSRF token. An operator
session looks at the tenant it picked read only: the operator key changes no tenant's
objects over the API either.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from services.api.context import Ctx
from services.api.errors import ApiError
from services.api.fair_pool import CALLER
from services.api.ui.session import COOKIE, CSRF_HEADER, SAFE_METHODS, Session, csrf_ok
from services.store.control import Tenant, hash_secret

_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization")
    if not header:
        raise ApiError(
            401,
            "unauthorized",
            "no credentials: send the header 'Authorization: Bearer <key>' with your API key",
            headers=_CHALLENGE,
        )
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise ApiError(
            401,
            "unauthorized",
            "the Authorization header must read 'Bearer <key>'",
            headers=_CHALLENGE,
        )
    return key.strip()


def _is_operator(ctx: Ctx, key: str) -> bool:
    expected = ctx.settings.operator_key.get_secret_value()
    return hmac.compare_digest(key.encode(), expected.encode())


def is_operator_digest(ctx: Ctx, digest: str) -> bool:
    expected = hash_secret(ctx.settings.operator_key.get_secret_value())
    return hmac.compare_digest(digest.encode(), expected.encode())


def _uses_cookie(request: Request) -> bool:
    return "authorization" not in request.headers and COOKIE in request.cookies


def same_origin(request: Request) -> bool:
    """A browser names the page's origin on every cross-site POST; when it does, it must
    be this host (a second line behind SameSite=Strict and the CSRF token)."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    # Behind a proxy that rewrites Host, the host the browser used is X-Forwarded-Host: a
    # page of another site cannot set that header without a CORS preflight we never allow.
    hosts = {request.headers.get("host", ""), request.headers.get("x-forwarded-host", "")}
    return origin.partition("://")[2] in hosts - {""}


def session_of(request: Request, ctx: Ctx) -> Session:
    """The request's valid session, CSRF-checked; 401 when absent or expired, 403 when
    the CSRF token or origin is wrong."""
    session = ctx.sessions.open(request.cookies.get(COOKIE, ""))
    if session is None:
        raise ApiError(
            401, "session_expired", "the dashboard session expired or is not valid; sign in again"
        )
    if not csrf_ok(session, request.method, request.headers.get(CSRF_HEADER)):
        raise ApiError(
            403,
            "csrf_failed",
            "the request lacks the session's CSRF token (header X-CSRF-Token); reload the page",
        )
    if request.method not in SAFE_METHODS and not same_origin(request):
        raise ApiError(403, "csrf_failed", "the request came from another site's page")
    return session


async def require_operator(request: Request, ctx: Ctx) -> None:
    if _uses_cookie(request):
        session = session_of(request, ctx)
        if session.is_operator and is_operator_digest(ctx, session.key_digest):
            return
        raise _operator_only()
    key = _bearer(request)
    if _is_operator(ctx, key):
        return
    if await ctx.tenant_by_key(key) is not None:
        raise _operator_only()
    raise _invalid_key()


async def require_tenant(request: Request, ctx: Ctx) -> Tenant:
    """The calling tenant; a body over its max_request_bytes quota is a 413 (the body is
    already in memory: the process's own bound was checked before anything else)."""
    tenant = await _identify_tenant(request, ctx)
    ctx.quotas.remember_caller(CALLER.get(), tenant)
    if request.method not in SAFE_METHODS:
        ctx.quotas.check_request_size(tenant, len(await request.body()))
    return tenant


async def _identify_tenant(request: Request, ctx: Ctx) -> Tenant:
    if _uses_cookie(request):
        return await _session_tenant(request, ctx)
    key = _bearer(request)
    tenant = await ctx.tenant_by_key(key)
    if tenant is not None:
        return tenant
    if _is_operator(ctx, key):
        raise ApiError(
            403,
            "forbidden",
            "the operator key only manages tenants; use the API key of a tenant "
            "(POST /api/tenants returns one)",
        )
    raise _invalid_key()


async def session_tenant(ctx: Ctx, session: Session) -> Tenant | None:
    """The tenant a session looks at: its own, or the one an operator picked; None when
    that tenant is gone or the key signed in with no longer holds."""
    if not session.is_operator:
        return await ctx.tenant_by_key_digest(session.key_digest)
    if not is_operator_digest(ctx, session.key_digest) or session.tenant_id is None:
        return None
    return await ctx.db(ctx.store.get_tenant, session.tenant_id)


async def _session_tenant(request: Request, ctx: Ctx) -> Tenant:
    session = session_of(request, ctx)
    if session.is_operator and request.method not in SAFE_METHODS:
        raise ApiError(
            403,
            "read_only",
            "the operator's view of a tenant is read only; sign in with the tenant's key",
        )
    tenant = await session_tenant(ctx, session)
    if tenant is not None:
        return tenant
    if session.is_operator and is_operator_digest(ctx, session.key_digest):
        raise ApiError(409, "no_tenant_picked", "pick a tenant first (PUT /ui/session/tenant)")
    raise ApiError(401, "session_expired", "the key of this session is no longer valid")


def _operator_only() -> ApiError:
    return ApiError(
        403, "forbidden", "managing tenants needs the operator key, not a tenant's API key"
    )


def _invalid_key() -> ApiError:
    return ApiError(
        401,
        "unauthorized",
        "the API key is not valid; use the key returned when the tenant was created",
        headers=_CHALLENGE,
    )


Operator = Depends(require_operator)
CurrentTenant = Annotated[Tenant, Depends(require_tenant)]

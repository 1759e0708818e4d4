"""Bearer keys: the operator key (from settings) manages tenants; a tenant's API key
manages that tenant's applications, pipelines and tasks."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from services.api.context import Ctx
from services.api.errors import ApiError
from services.store.control import Tenant

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


async def require_operator(request: Request, ctx: Ctx) -> None:
    key = _bearer(request)
    if _is_operator(ctx, key):
        return
    if await ctx.tenant_by_key(key) is not None:
        raise ApiError(
            403, "forbidden", "managing tenants needs the operator key, not a tenant's API key"
        )
    raise _invalid_key()


async def require_tenant(request: Request, ctx: Ctx) -> Tenant:
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


def _invalid_key() -> ApiError:
    return ApiError(
        401,
        "unauthorized",
        "the API key is not valid; use the key returned when the tenant was created",
        headers=_CHALLENGE,
    )


Operator = Depends(require_operator)
CurrentTenant = Annotated[Tenant, Depends(require_tenant)]

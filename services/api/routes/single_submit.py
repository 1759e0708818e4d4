"""The single-task submit without FastAPI's per-request parameter solving.

``POST /api/applications/{app}/pipelines/{pipeline}`` is the route a client submitting
tasks one by one calls most. Profiled in-process (the app alone, in-memory Kafka), FastAPI's
route matching and dependency solving took more of each such request than the submit's own
work. :class:`SingleSubmitRoute` stands first in the router and takes the requests whose
only query parameter is ``id`` (the SDK's form, and the plain one): it reads the tenant and
the body through the same functions as the declared route and hands them to the same
``submit_one``. Any other query parameter (``delay``, ``max_attempts``, ...) is left to the
declared route, which validates it and documents the whole route in the OpenAPI, so no
rule is written twice.

Errors raised here reach the app's exception handlers as the declared route's do, and the
route's template is the one the declared route sets, for the request metrics and traces.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import Scope

from services.api.auth import require_tenant
from services.api.context import ApiContext
from services.api.routes import submits

#: The query parameters this route reads itself: any other goes to the declared route.
_OWN_QUERY = frozenset({"id"})


class SingleSubmitRoute(Route):
    """``POST <pipeline>[?id=...]``, answered as ``submit_task`` would (see the module)."""

    def __init__(self, declared: APIRoute) -> None:
        super().__init__(declared.path, _submit, methods=["POST"], include_in_schema=False)
        self.declared = declared

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http" or scope["method"] != "POST":
            return Match.NONE, {}
        if not _own_query(scope.get("query_string", b"")):
            return Match.NONE, {}
        match, child_scope = super().matches(scope)
        if match is not Match.FULL:
            return Match.NONE, {}
        child_scope["route"] = self.declared
        return match, child_scope


def _own_query(query: bytes) -> bool:
    if not query:
        return True
    pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
    return all(name in _OWN_QUERY for name, _ in pairs)


async def _submit(request: Request) -> Response:
    ctx: ApiContext = request.app.state.ctx
    tenant = await require_tenant(request, ctx)
    params = request.path_params
    return await submits.submit_one(
        ctx,
        tenant,
        app=params["app"],
        pipeline=params["pipeline"],
        raw=await request.body(),
        task_id=request.query_params.get("id") or request.headers.get("idempotency-key"),
    )


def install(app: FastAPI) -> None:
    """Put the route before every other: call once the routers are included."""
    declared = next(
        route
        for route in submits.router.routes
        if isinstance(route, APIRoute) and route.endpoint is submits.submit_task
    )
    app.router.routes.insert(0, SingleSubmitRoute(declared))

"""The submits without FastAPI's per-request work: a single task, and a batch's plain form.

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

``POST <pipeline>/tasks`` (:class:`BatchSubmitRoute`) is the batch submit. Profiled
in-process, a batch of 1,000 spent more CPU in json.loads, pydantic (validating the body,
then a model per result, validated again as the response) and re-serialising each item's
data than in its own work. The route reads the body with ``submit.plain_batch`` (msgspec):
in the plain form (each item a data object and perhaps an id, the SDK's form) it hands
the items to ``submits.submit_plain_batch``; any other body, valid or not, goes on to the
declared route with the bytes it read, and pydantic validates it as the OpenAPI documents.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import Message, Receive, Scope, Send

from services.api.auth import require_tenant
from services.api.context import ApiContext
from services.api.routes import submits
from services.api.submit import plain_batch

#: The query parameters this route reads itself: any other goes to the declared route.
_OWN_QUERY = frozenset({"id"})


class _FrontRoute(Route):
    """A POST route standing before ``declared`` (same path), labelled as it for the
    request metrics and traces; ``takes`` says which of its requests it answers."""

    def __init__(self, declared: APIRoute, endpoint: Callable[[Request], Awaitable[Response]]):
        super().__init__(declared.path, endpoint, methods=["POST"], include_in_schema=False)
        self.declared = declared

    def takes(self, scope: Scope) -> bool:
        return True

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http" or scope["method"] != "POST" or not self.takes(scope):
            return Match.NONE, {}
        match, child_scope = super().matches(scope)
        if match is not Match.FULL:
            return Match.NONE, {}
        child_scope["route"] = self.declared
        return match, child_scope


class SingleSubmitRoute(_FrontRoute):
    """``POST <pipeline>[?id=...]``, answered as ``submit_task`` would (see the module)."""

    def __init__(self, declared: APIRoute) -> None:
        super().__init__(declared, _submit)

    def takes(self, scope: Scope) -> bool:
        return _own_query(scope.get("query_string", b""))


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


#: Where ``BatchSubmitRoute.handle`` leaves the items it read for ``_submit_batch``.
_ITEMS = "wsched.plain_batch"


class BatchSubmitRoute(_FrontRoute):
    """``POST <pipeline>/tasks``: the plain form answered here, any other body by the
    declared route (see the module)."""

    def __init__(self, declared: APIRoute) -> None:
        super().__init__(declared, _submit_batch)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The body limit (its size and nesting) was enforced by the middleware, as for any
        # route: it is read here once and handed on to whichever route answers.
        request = Request(scope, receive)
        raw = await request.body()
        replay = _replay(raw, receive)
        items = plain_batch(raw) if _json_type(request.headers.get("content-type")) else None
        if items is None:
            await self.declared.handle(scope, replay, send)
            return
        scope[_ITEMS] = items
        await self.app(scope, replay, send)


def _json_type(content_type: str | None) -> bool:
    """Whether the declared route would read the body as JSON (FastAPI's strict rule:
    ``application/json`` or ``application/*+json``, and a Content-Type is required)."""
    if not content_type:
        return False
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind == "application/json" or (
        kind.startswith("application/") and kind.endswith("+json")
    )


def _replay(body: bytes, receive: Receive) -> Receive:
    """``receive`` with ``body`` given back as the request's one message, then the
    connection's own messages (a disconnect) as they come."""
    given = False

    async def replayed() -> Message:
        nonlocal given
        if given:
            return await receive()
        given = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed


async def _submit_batch(request: Request) -> Response:
    ctx: ApiContext = request.app.state.ctx
    tenant = await require_tenant(request, ctx)
    params = request.path_params
    return await submits.submit_plain_batch(
        ctx, tenant, app=params["app"], pipeline=params["pipeline"], items=request.scope[_ITEMS]
    )


def install(app: FastAPI) -> None:
    """Put the routes before every other: call once the routers are included."""
    app.router.routes[:0] = [
        SingleSubmitRoute(_declared(submits.submit_task)),
        BatchSubmitRoute(_declared(submits.submit_batch)),
    ]


def _declared(endpoint: object) -> APIRoute:
    return next(
        route
        for route in submits.router.routes
        if isinstance(route, APIRoute) and route.endpoint is endpoint
    )

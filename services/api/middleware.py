"""ASGI middleware: the bounds on request bodies, and request metrics.

Plain ASGI rather than Starlette's ``BaseHTTPMiddleware``, which buffers responses and
runs the endpoint in another task.
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.api.errors import error_response
from services.api.json_depth import too_deep
from services.api.metrics import ApiMetrics


def _too_large(limit: int) -> str:
    return f"the request body is larger than {limit} bytes; split the batch into smaller requests"


def _too_deep(limit: int) -> str:
    return (
        f"the request body nests arrays and objects more than {limit} levels deep, the "
        "limit: flatten the data, or store it elsewhere and pass a reference"
    )


class BodyLimit:
    """Refuse bodies over ``max_bytes`` (413) or nesting JSON deeper than ``max_depth``
    (400), before anything parses them: the one place every body's bounds are checked.

    Size is checked from Content-Length up front and counted while reading (a client may
    send chunked or lie). The body is read here and handed on whole, which the endpoints
    do anyway. Every body is measured as JSON, whatever its Content-Type: the single-task
    route parses any body as JSON.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int, max_depth: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_depth = max_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "DELETE", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        body = await self._read(receive)
        if body is None:
            await self._refuse(scope, receive, send)
            return
        if too_deep(body, self.max_depth):
            response = error_response(400, "json_too_deep", _too_deep(self.max_depth))
            await response(scope, receive, send)
            return
        await self.app(scope, _replay(body, receive), send)

    async def _read(self, receive: Receive) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                # The client went away: nothing to answer; the app sees an empty body.
                return b"".join(chunks)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(413, "request_too_large", _too_large(self.max_bytes))
        await response(scope, receive, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        # After the body, the app only waits for a disconnect.
        return await receive()

    return replay


class RequestMetrics:
    """Count and time requests by route template (never by raw path: ids would explode it)."""

    def __init__(self, app: ASGIApp, *, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"]
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(method, route).observe(time.perf_counter() - started)

"""Security headers on every dashboard answer (plain ASGI, like services.api.middleware):
the CSP that forbids inline script is what makes an injected ``<script>`` inert."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.api.ui.session import SECURITY_HEADERS

_HEADERS = [(name.encode(), value.encode()) for name, value in SECURITY_HEADERS.items()]


class DashboardHeaders:
    """Add :data:`SECURITY_HEADERS` to answers under ``prefix``."""

    def __init__(self, app: ASGIApp, *, prefix: str = "/ui") -> None:
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path != self.prefix and not path.startswith(self.prefix + "/"):
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(n, v) for n, v in _HEADERS if n not in names]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)
